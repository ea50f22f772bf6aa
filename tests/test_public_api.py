"""The public surface is exactly what is intended, documented, typed, and cheap to import."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.resources
import inspect
import json
import subprocess
import sys
import types

import pytest

import knai

EXPECTED = {
    "APIConnectionError",
    "APITimeoutError",
    "ActiveSession",
    "AsyncKNAIProvider",
    "ChargeResult",
    "InsufficientBalanceError",
    "InvalidAPIKeyError",
    "JSONValue",
    "KNAIError",
    "KNAIProvider",
    "RateLimitError",
    "ResponseMeta",
    "ResponseValidationError",
    "RetryPolicy",
    "ServerError",
    "Session",
    "SessionExpiredError",
    "SessionStatus",
    "SessionWaitTimeoutError",
    "__version__",
}
TYPE_ALIASES = {"JSONValue", "SessionStatus"}
PUBLIC_CLASSES = sorted(EXPECTED - {"__version__"} - TYPE_ALIASES)


def test_all_is_exactly_the_intended_set() -> None:
    assert set(knai.__all__) == EXPECTED
    assert len(knai.__all__) == len(EXPECTED)


def test_every_name_in_all_resolves() -> None:
    for name in knai.__all__:
        assert getattr(knai, name) is not None, name


def test_no_public_attribute_outside_all() -> None:
    """`import knai` exposes no stray public names (submodules aside)."""
    public = {
        name
        for name in dir(knai)
        if not name.startswith("_") and not isinstance(getattr(knai, name), types.ModuleType)
    }
    assert public == EXPECTED - {"__version__"}


@pytest.mark.parametrize("name", PUBLIC_CLASSES)
def test_public_class_has_its_own_docstring(name: str) -> None:
    cls = getattr(knai, name)
    assert inspect.isclass(cls)
    assert (vars(cls).get("__doc__") or "").strip(), f"{name} has no docstring of its own"


def _own_public_members(cls: type) -> list[str]:
    """Public methods and properties that knai defines (not pydantic's or object's)."""
    names = []
    for name, member in inspect.getmembers(cls):
        if name.startswith("_"):
            continue
        func = member.fget if isinstance(member, property) else member
        if getattr(func, "__module__", "").startswith("knai"):
            names.append(name)
    return names


DOCUMENTED = [
    (cls, name)
    for cls in (
        knai.KNAIProvider,
        knai.AsyncKNAIProvider,
        knai.Session,
        knai.ActiveSession,
        knai.ChargeResult,
    )
    for name in _own_public_members(cls)
]


def test_member_scan_sees_the_api() -> None:
    """Guards the docstring test below against silently scanning nothing."""
    seen = {(cls.__name__, name) for cls, name in DOCUMENTED}
    for cls_name in ("KNAIProvider", "AsyncKNAIProvider"):
        for method in ("get_session", "wait_for_session", "charge", "with_options"):
            assert (cls_name, method) in seen
    assert ("KNAIProvider", "close") in seen
    assert ("AsyncKNAIProvider", "aclose") in seen
    for method in ("get", "keys", "items", "values", "to_dict", "to_json", "meta", "is_active"):
        assert ("Session", method) in seen


@pytest.mark.parametrize(("cls", "name"), DOCUMENTED, ids=lambda v: getattr(v, "__name__", v))
def test_public_method_has_a_docstring(cls: type, name: str) -> None:
    member = inspect.getattr_static(cls, name)
    if isinstance(member, (classmethod, staticmethod)):
        member = member.__func__
    assert (getattr(member, "__doc__", None) or "").strip(), f"{cls.__name__}.{name}"


def test_010_import_paths_still_work() -> None:
    from knai.client import KNAIProvider
    from knai.errors import (
        InsufficientBalanceError,
        InvalidAPIKeyError,
        KNAIError,
        SessionExpiredError,
    )

    assert KNAIProvider is knai.KNAIProvider
    assert KNAIError is knai.KNAIError
    assert SessionExpiredError is knai.SessionExpiredError
    assert InsufficientBalanceError is knai.InsufficientBalanceError
    assert InvalidAPIKeyError is knai.InvalidAPIKeyError


def test_version_is_the_installed_distributions() -> None:
    assert isinstance(knai.__version__, str)
    assert knai.__version__ == importlib.metadata.version("knai-provider")


def test_py_typed_ships_in_the_package() -> None:
    assert importlib.resources.files("knai").joinpath("py.typed").is_file()


def test_import_knai_pulls_in_no_sandbox_or_test_tools() -> None:
    code = (
        "import json, sys, knai\n"
        "banned = ('starlette', 'uvicorn', 'respx', 'knai.testing', 'pytest')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in banned"
        " or m.startswith('knai.testing'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []


def test_import_knai_does_not_build_the_pydantic_models() -> None:
    """`import knai` stays cheap: pydantic's model machinery loads on first use."""
    code = (
        "import sys, knai; assert 'pydantic.main' not in sys.modules, 'eager';"
        " knai.Session; assert 'pydantic.main' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _attribute_docstrings(module: types.ModuleType) -> dict[str, str]:
    """Docstrings written as a string right after a module-level assignment."""
    tree = ast.parse(inspect.getsource(module))
    found: dict[str, str] = {}
    for node, after in zip(tree.body, tree.body[1:], strict=False):
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if (
            isinstance(target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            found[target.id] = after.value.value
    return found


def _defining_module(package: types.ModuleType, name: str) -> types.ModuleType:
    """The private module that assigns `name` (found through the package's imports)."""
    for module_name in sorted(sys.modules):
        module = sys.modules[module_name]
        if (
            module_name.startswith(package.__name__ + "._")
            and name in vars(module)
            and name in _attribute_docstrings(module)
        ):
            return module
    raise AssertionError(f"no module of {package.__name__} defines {name}")


def _public_names() -> list[tuple[str, str]]:
    import knai.testing

    return [("knai", n) for n in knai.__all__ if n != "__version__"] + [
        ("knai.testing", n) for n in knai.testing.__all__
    ]


@pytest.mark.parametrize(("package", "name"), _public_names())
def test_every_public_name_has_a_docstring(package: str, name: str) -> None:
    """Classes, functions, constants and type aliases of knai and knai.testing alike."""
    module = importlib.import_module(package)
    value = getattr(module, name)
    if inspect.isclass(value) or inspect.isfunction(value):
        assert (value.__doc__ or "").strip(), f"{package}.{name}"
        return
    defining = _defining_module(module, name)
    assert _attribute_docstrings(defining).get(name, "").strip(), f"{package}.{name}"


def _testing_classes() -> list[type]:
    import knai.testing

    values = [getattr(knai.testing, name) for name in knai.testing.__all__]
    return [v for v in values if inspect.isclass(v) and not issubclass(v, BaseException)]


TESTING_METHODS = [(cls, name) for cls in _testing_classes() for name in _own_public_members(cls)]


def test_testing_member_scan_sees_the_sandbox_api() -> None:
    seen = {(cls.__name__, name) for cls, name in TESTING_METHODS}
    for method in ("close", "create_provider", "balance", "stats", "inject_fault"):
        assert ("SandboxAdmin", method) in seen
    assert ("SandboxTransport", "handle_request") in seen
    assert ("AsyncSandboxTransport", "aclose") in seen
    assert ("Charge", "to_json") in seen


@pytest.mark.parametrize(("cls", "name"), TESTING_METHODS, ids=lambda v: getattr(v, "__name__", v))
def test_every_knai_testing_method_has_a_docstring(cls: type, name: str) -> None:
    member = inspect.getattr_static(cls, name)
    if isinstance(member, (classmethod, staticmethod)):
        member = member.__func__
    if isinstance(member, property):
        member = member.fget
    assert (getattr(member, "__doc__", None) or "").strip(), f"{cls.__name__}.{name}"


def test_model_signatures_show_plain_types() -> None:
    """help() and inspect.signature of the models show types, not validator plumbing."""
    for cls in (knai.Session, knai.ActiveSession, knai.ChargeResult):
        text = str(inspect.signature(cls))
        for plumbing in ("Annotated", "Validator", "0x"):
            assert plumbing not in text, text
    assert "session_token: str," in str(inspect.signature(knai.ActiveSession))
    assert "expires_at: datetime.datetime | None = None" in str(inspect.signature(knai.Session))


def test_serve_is_documented_as_a_context_manager() -> None:
    from knai.testing import serve

    assert "AbstractContextManager[RunningSandbox]" in str(inspect.signature(serve))
    assert "context manager" in (serve.__doc__ or "")


def test_misspelt_names_are_attribute_errors_at_run_time() -> None:
    import knai.testing

    for module, typo in ((knai, "Sesion"), (knai.testing, "Sandbx")):
        with pytest.raises(AttributeError, match=typo):
            getattr(module, typo)
