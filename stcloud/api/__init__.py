"""The REST API's contract: pydantic models that validate every JSON body and query, the
route metadata that describes each operation, and the OpenAPI 3.1 document built from both
(``GET /api/openapi.json``, rendered at ``/api/docs``). See ``docs/api.md``.

- ``stcloud.api.validation``: ``parse(Model, data)`` / ``body(Model)`` / ``query(Model)`` ->
  a validated model, or a 400 problem+json naming every bad field.
- ``stcloud.api.spec``: ``@operation(...)`` attaches the models and responses to a view.
- ``stcloud.api.openapi``: the document, from the app's URL map and those attachments.
- ``stcloud.api.schemas``: the models, one module per area.

This package imports no service: routes import it, never the other way round.
"""
