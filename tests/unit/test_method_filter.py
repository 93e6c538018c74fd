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


def test_several_filters_select_their_union_in_the_suite_order():
    suite = load_suite("suites/interference_lab.yaml", [])
    picked = suite.with_only(method=["bkmoo_cagrad", "joint_sft", "joint_sft"], seed=[3, 1, 3])
    assert [m.display for m in picked.methods] == ["joint_sft", "bkmoo_cagrad"]
    assert picked.seeds == (3, 1)
    assert [m.display for m in suite.with_only(method=["mgda", "bkmoo"]).methods] == [
        "mgda", "bkmoo_mgda", "bkmoo_pcgrad", "bkmoo_cagrad"]


def test_the_cli_takes_every_method_given_and_names_one_that_selects_nothing(capsys):
    from harness.cli import build_parser, main

    args = build_parser().parse_args(["run", "suites/interference_lab.yaml", "--method", "mgda", "--method", "cagrad",
                                      "--seed", "0", "--seed", "2"])
    assert args.method == ["mgda", "cagrad"] and args.seed == [0, 2]
    assert main(["run", "suites/interference_lab.yaml", "--method", "mgda", "--method", "mgdaa"]) == 2
    err = capsys.readouterr().err
    assert "--method mgdaa selects nothing" in err and "--method mgda " not in err
