"""The quiet terminal: --version, -v levels, each warning once, help with examples."""
import logging

import pytest

import vlground
from vlground.cli import COMMANDS, build_parser, main
from vlground.cli.terminal import OnceFilter, configure


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"vlground {vlground.__version__}"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_help_has_examples(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and f"vlground {command}" in out.split("examples:")[1]


def test_verbose_levels_before_or_after_the_command():
    assert build_parser("train").parse_args(["train", "--corpus", "c", "--out", "o"]).verbose == 0
    assert build_parser("train").parse_args(["-v", "train", "--corpus", "c", "--out", "o"]).verbose == 1
    assert build_parser("train").parse_args(["train", "-vv", "--corpus", "c", "--out", "o"]).verbose == 2


def test_info_only_with_v_and_each_warning_once(capsys):
    log = logging.getLogger("vlground.test_terminal")
    try:
        configure(0)
        log.info("detail")
        for _ in range(3):
            log.warning("no torchvision; pip install torchvision for faster image processing")
        err = capsys.readouterr().err
        assert "detail" not in err
        assert err.count("vlground: warning: no torchvision") == 1
        configure(1)
        log.info("detail")
        assert "detail" in capsys.readouterr().err
        assert logging.getLogger("transformers").level == logging.ERROR
    finally:
        configure(0)


def test_once_filter_keeps_different_messages():
    f = OnceFilter()
    rec = lambda msg, lvl=logging.WARNING: logging.LogRecord("x", lvl, __file__, 1, msg, None, None)  # noqa: E731
    assert f.filter(rec("a")) and not f.filter(rec("a")) and f.filter(rec("b"))
    assert f.filter(rec("i", logging.INFO)) and f.filter(rec("i", logging.INFO))
