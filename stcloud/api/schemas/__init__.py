"""The API models, one module per area. Request models validate (``stcloud.api.validation``);
response models document what a route answers (the OpenAPI document and the schemathesis test
check the answers against them)."""
