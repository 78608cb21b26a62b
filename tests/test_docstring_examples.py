"""Every ``Example::`` block of a public docstring runs, so that an example cannot rot.

The blocks run as written, in a namespace with ``jax``, ``jnp``, ``np``,
``optax`` and ``lt`` imported, one block per test.
"""

import importlib
import inspect
import pkgutil
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import logtrick as lt


def public_modules():
    yield lt
    for info in pkgutil.walk_packages(lt.__path__, "logtrick."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            yield importlib.import_module(info.name)


def example(doc: str) -> str | None:
    """The indented block after ``Example::``, dedented; None without one."""
    lines = doc.expandtabs().splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Example::":
            indent = len(line) - len(line.lstrip())
            block = []
            for body in lines[i + 1:]:
                if body.strip() and len(body) - len(body.lstrip()) <= indent:
                    break
                block.append(body)
            return textwrap.dedent("\n".join(block)).strip()
    return None


def documented():
    """(qualified name, example) of every public function and class with an example, each once."""
    found = {}
    for module in public_modules():
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                code = example(inspect.getdoc(obj) or "")
                if code:
                    found[f"{module.__name__}.{name}"] = code
    return sorted(found.items())


EXAMPLES = documented()


def test_the_examples_are_found():
    assert len(EXAMPLES) >= 40, [name for name, _ in EXAMPLES]


@pytest.mark.parametrize("name, code", EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_docstring_example_runs(name, code):
    exec(compile(code, f"<{name} example>", "exec"), {"jax": jax, "jnp": jnp, "np": np, "optax": optax, "lt": lt})
