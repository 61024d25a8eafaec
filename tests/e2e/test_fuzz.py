"""The random-graph check on a fast subset (``python -m benchmarks.fuzz`` runs 500 and more)."""

from benchmarks import fuzz


def test_random_graphs_fast_subset():
    """About 30 random graphs through ``convert`` and every check of ``benchmarks.fuzz``, each
    in a worker process (a crash is counted, not fatal)."""
    results = fuzz.run_many(range(1000, 1030), workers=2, timeout=300, progress=False)
    bugs = [r for r in results if r["outcome"] in fuzz.BUGS]
    assert not bugs, "\n".join(f"seed {r['seed']}: {r['outcome']}: {r.get('message')}"
                               for r in bugs)
    outcomes = {r["outcome"] for r in results}
    assert "ok" in outcomes and "budget" in outcomes  # the subset exercises both paths
