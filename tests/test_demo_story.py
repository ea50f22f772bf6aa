"""`knai demo` outside a checkout: with no paid chat example it still walks the wallet steps."""

import pytest

from knai.testing import _demo_story
from knai.testing._demo import run_demo


def test_without_the_example_the_demo_walks_the_wallet_steps(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_demo_story, "example_builder", lambda: None)
    assert run_demo() == 0
    out = capsys.readouterr().out
    assert "no paid chat service here" in out
    assert "InsufficientBalanceError" in out
    assert "ledger agrees: yes" in out


def test_from_a_checkout_the_example_service_is_found() -> None:
    build_app = _demo_story.example_builder()
    assert build_app is not None
    assert build_app.__name__ == "build_app"
