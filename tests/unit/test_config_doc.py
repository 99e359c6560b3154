"""docs/configuration.md is rendered from the config schema (tools/config_doc.py), never edited by hand."""
import dataclasses
import os

import pytest

from core.settings import SCHEMA
from tests.support.paths import REPO
from tools import config_doc


def test_configuration_page_is_the_schemas_rendering():
    with open(os.path.join(REPO, "docs", "configuration.md"), encoding="utf-8") as f:
        page = f.read()
    assert page == config_doc.render(), \
        "docs/configuration.md differs from the schema's rendering: run `python tools/config_doc.py`"


def test_page_lists_every_key_with_the_schemas_default():
    """The rendering itself, not only its agreement with the file: one row per key, its default in it."""
    text = config_doc.render()
    for section, keys in SCHEMA.items():
        assert f"\n## {section}\n" in text
        for name, key in keys.items():
            rows = [line for line in text.splitlines() if line.startswith(f"| `{section}.{name}` |")]
            assert len(rows) == 1, f"{section}.{name}"
            assert f"`{config_doc.json.dumps(key.default)}`" in rows[0], f"{section}.{name}"


def test_a_key_without_a_description_is_refused(monkeypatch):
    monkeypatch.setitem(SCHEMA, "extra", {"key": dataclasses.replace(SCHEMA["label"]["top_k"], description=" ")})
    with pytest.raises(ValueError, match=r"keys without a description: \['extra.key'\]"):
        config_doc.render()


def test_check_mode_says_what_to_run(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text("# Configuration\n")
    monkeypatch.setattr(config_doc, "PAGE", str(stale))
    assert config_doc.main(["--check"]) == 1
    assert "run `python tools/config_doc.py`" in capsys.readouterr().err
    assert config_doc.main([]) == 0
    assert config_doc.main(["--check"]) == 0
