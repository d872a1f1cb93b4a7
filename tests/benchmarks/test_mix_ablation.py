"""benchmarks/mix_ablation.py: the arms differ only in their data, and the smoke mode runs the whole grid."""

import json
import math

import pytest

from benchmarks import mix_ablation as ab
from bitjax.config import load_recipe
from tests.support import RECIPES

RECIPE = RECIPES / "distill_tiny.py"


def test_arms_differ_only_in_their_data(tmp_path):
    base = load_recipe(RECIPE)
    budget = ab.Budget()
    cfgs = {(arm, kd): ab.arm_config(base, arm, tmp_path, budget, kd=kd, seed=0) for arm in ab.ARMS
            for kd in (False, True)}
    for (arm, kd), cfg in cfgs.items():
        weights = cfg.data.mixture_weights()
        assert weights == ({"natural": 1.0} if arm == "natural" else {"natural": 0.6, "rephrased": 0.4})
        assert all(s.resolved_objective == "kd" for s in cfg.data.sources)      # every row from the cache
        assert cfg.distill.kd_weight == (base.distill.kd_weight if kd else 0.0)
        assert (cfg.steps, cfg.data.batch_size, cfg.data.seq_len) == (budget.steps, budget.batch_size,
                                                                       budget.seq_len)
        assert cfg.model == cfgs[("natural", False)].model
        assert cfg.distill.cache.endswith(arm)                                  # CE and KD share an arm's cache
    assert cfgs[("gated", True)].data.sources[1].uri == f"jsonl:{ab.KEPT}"
    assert cfgs[("ungated", True)].data.sources[1].uri == f"jsonl:{tmp_path / 'ungated.jsonl'}"


def test_ungated_file_holds_kept_and_rejected_lines_interleaved(tmp_path):
    kept, rejected = tmp_path / "k.jsonl", tmp_path / "r.jsonl"
    kept.write_text("".join(json.dumps({"id": f"d{i}#qa", "text": "kept"}) + "\n" for i in (0, 2)))
    rejected.write_text("".join(json.dumps({"id": f"d{i}#qa", "text": t}) + "\n" for i, t in ((1, "no"), (3, ""))))
    lines = [json.loads(x) for x in ab.ungated_file(tmp_path, kept, rejected).read_text().splitlines()]
    assert [r["id"] for r in lines] == ["d0#qa", "d1#qa", "d2#qa"]               # empty generations dropped


@pytest.mark.slow
def test_smoke_mode_runs_the_whole_grid(tmp_path):
    pytest.importorskip("llama_cpp")
    text = "Antonio lends Bassanio three thousand ducats for three months, and Shylock asks for a bond. "
    kept, rejected = tmp_path / "kept.jsonl", tmp_path / "rejected.jsonl"
    for path, n in ((kept, 6), (rejected, 6)):
        path.write_text("".join(json.dumps({"id": f"{path.stem}{i}", "text": text * (i + 1)}) + "\n"
                                for i in range(n)))
    results = ab.main(["--smoke", "--out", str(tmp_path / "out"), "--kept", str(kept), "--rejected", str(rejected)])
    assert set(results) == {f"{a}/{o}/seed0" for a in ab.ARMS for o in ("ce", "kd")}
    assert all(math.isfinite(r["heldout_loss"]) for r in results.values())
    assert len({r["heldout_tokens"] for r in results.values()}) == 1            # the same natural held-out tokens
