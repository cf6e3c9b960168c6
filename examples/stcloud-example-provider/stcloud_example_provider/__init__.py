"""An example stcloud provider: ``ExampleProvider`` (the adapter) and ``create`` (its factory)."""
from stcloud_example_provider.adapter import ExampleProvider

__all__ = ["ExampleProvider"]
