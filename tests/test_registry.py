"""The one registry helper behind every named thing."""
import doctest

import pytest

from convnet._internal import registry as registry_module
from convnet._internal.registry import Registry


def test_doctests():
    assert doctest.testmod(registry_module).failed == 0


def test_register_get_names_and_errors():
    things = Registry("thing", normalise=lambda name: name.lower().replace("_", "-"))
    assert things.register("Fashion-MNIST", 1) == 1

    @things.register("mnist")
    def mnist():
        return 2

    assert things.get("fashion_mnist") == 1 and things.get("MNIST") is mnist
    assert things.names() == ["fashion-mnist", "mnist"] and things.names("fash*") == ["fashion-mnist"]
    assert "Fashion_MNIST" in things and 3 not in things and len(things) == 2
    assert things.name_of(mnist) == "mnist" and things.name_of(object()) is None
    with pytest.raises(ValueError, match=r"a thing named 'MNIST' is already registered"):
        things.register("MNIST", 3)
    with pytest.raises(ValueError, match=r"`dataset`: unknown thing 'mnst'\. Did you mean 'mnist'\? "
                                         r"Available: fashion-mnist, mnist\."):
        things.get("mnst", argument="dataset")
    with pytest.raises(TypeError, match=r"`dataset` must be a string\. Received: dataset=3 \(type int\)"):
        things.get(3, argument="dataset")
