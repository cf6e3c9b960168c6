from tests.providers.fixtures import dataset, fake, rapp, rclient  # noqa: F401
