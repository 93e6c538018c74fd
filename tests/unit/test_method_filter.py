"""`--method X` (Suite.with_only): a label selects that method only; a method name without such a label selects all of
its variants (nox `train(bkmoo)`)."""

from __future__ import annotations

from harness.suite import load_suite


def test_a_label_is_not_also_a_name_prefix():
    suite = load_suite("suites/distributed.yaml", [])
    assert [m.display for m in suite.with_only(method="mgda").methods] == ["mgda"]
    assert [m.display for m in suite.with_only(method="mgda-full-gather").methods] == ["mgda-full-gather"]


def test_a_name_selects_every_variant():
    suite = load_suite("suites/quickstart.yaml", [])
    assert [m.display for m in suite.with_only(method="bkmoo").methods] == ["bkmoo_mgda", "bkmoo_pcgrad",
                                                                           "bkmoo_cagrad"]
    assert suite.with_only(method="nope").methods == ()
