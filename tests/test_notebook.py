"""The notebook API: `imlca.run(config, overrides=...)` takes `--set`'s dotted keys with Python values."""
import pytest

import imlca
from imlca.errors import ConfigError

from conftest import TINY


def test_run_from_a_notebook_applies_overrides_and_returns_the_result(tmp_path):
    result = imlca.run(TINY, overrides={"align.lam": 0.3, "align.compare": []}, out=tmp_path)
    assert result.methods == ["im_lca"] and len(result.acc["im_lca"]) == 3
    assert result.summary["im_lca"]["avg_acc"] == pytest.approx(
        sum(sum(row) / len(row) for row in result.acc["im_lca"]) / 3)
    assert "lam: 0.3" in (tmp_path / "config.yaml").read_text()
    assert imlca.load(tmp_path).classes == [f"class {c}" for c in (0, 2, 3, 4, 5, 1)]  # seed 1993: permutation(6)


def test_bad_override_is_one_line_naming_the_key():
    with pytest.raises(ConfigError, match="align.lam"):
        imlca.experiment(TINY, {"align.lam": -1})
