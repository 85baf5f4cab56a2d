"""docs/contract.md is generated from the code (names, models, topology): the committed page
must be what the command renders now, and the README's contract section points to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.cli.main import main
from router.contract.reference import REGENERATE

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "contract.md"


def test_the_committed_contract_page_is_what_the_code_renders(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["contract", "doc"]) == 0
    rendered = capsys.readouterr().out
    committed = PAGE.read_text() if PAGE.exists() else ""
    assert rendered == committed, (
        f"docs/contract.md differs from the code: regenerate it with `{REGENERATE}`"
    )


def test_the_page_covers_every_name_a_consumer_relies_on() -> None:
    page = PAGE.read_text()
    for name in (
        "attentive.events",
        "attentive.app.{app}",
        "attentive.unrouted",
        "attentive.invalid",
        "x-attentive-attempt",
        "cloudEvents:id",
        "custom_attribute.set.{companyId}",
    ):
        assert f"`{name}`" in page


def test_the_readme_links_the_contract_and_keeps_its_section_short() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The RabbitMQ contract", 1)[1].split("\n## ", 1)[0]
    assert "(docs/contract.md)" in section
    assert len(section.strip().splitlines()) <= 15
