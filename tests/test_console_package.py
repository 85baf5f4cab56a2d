"""The console is served from files inside the package: a wheel of the project (what the
image installs) holds every template and static file, and nothing is fetched from elsewhere
at run time (no CDN: every script, stylesheet and image a page names is the console's own)."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSOLE = ROOT / "router" / "console"


def _console_files() -> set[str]:
    return {
        str(path.relative_to(ROOT))
        for folder in ("templates", "static")
        for path in (CONSOLE / folder).rglob("*")
        if path.is_file()
    }


def test_the_wheel_holds_every_template_and_static_file(tmp_path: Path) -> None:
    """Given the project's own files,
    when a wheel is built from them (as deploy/Dockerfile does),
    then it holds every template and static file of the console."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), "."],
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("attentive_router-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        held = set(archive.namelist())
    assert _console_files() and _console_files() <= held


def test_no_page_names_anything_from_elsewhere() -> None:
    """Every src and href in the templates is a path of this site (or an anchor), never a URL
    of another host: the console works on an air-gapped cluster."""
    outside = []
    for template in (CONSOLE / "templates").glob("*.html"):
        for target in re.findall(r'(?:src|href|action)="([^"]*)"', template.read_text()):
            if re.match(r"(?i)^(?:[a-z][a-z0-9+.-]*:)?//", target):
                outside.append(f"{template.name}: {target}")
    assert outside == []
