"""`.env` as Honk writes it and reads it back, and as people write it by hand."""

from __future__ import annotations

from pathlib import Path

from honk_app.settings import read_dotenv, write_dotenv

AWKWARD = {
    "ENDS_WITH_A_QUOTE": 'abc"',
    "QUOTED": '"quoted"',
    "SINGLE_QUOTES": "'it's'",
    "BACKSLASHES": "a\\nb\\",
    "SPACES": " two  spaces ",
    "HASH": "x #not a comment",
    "DOLLAR": "${HOME}$PATH",
    "EMPTY": "",
}


def test_every_value_honk_writes_reads_back_as_it_was(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    write_dotenv(env, {**AWKWARD, "APP_ID": "77"})
    assert read_dotenv(env) == {**AWKWARD, "APP_ID": "77"}
    assert "APP_ID=77" in env.read_text().splitlines()  # a plain value stays bare


def test_rewriting_a_value_keeps_the_others_as_they_were(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    write_dotenv(env, AWKWARD)
    write_dotenv(env, {"QUOTED": "now plain"})
    assert read_dotenv(env) == {**AWKWARD, "QUOTED": "now plain"}


def test_a_hand_written_file_reads_as_python_dotenv_reads_it(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text('# a comment\nA="double quoted"\nB=\'single\'\nexport C=plain\n'
                   "D=bare # a comment\nE=${A}\nNO_VALUE\n")
    assert read_dotenv(env) == {"A": "double quoted", "B": "single", "C": "plain",
                                "D": "bare", "E": "${A}"}


def test_no_file_is_no_values(tmp_path: Path) -> None:
    assert read_dotenv(tmp_path / "missing.env") == {}


def test_a_name_set_twice_by_hand_takes_the_new_value(tmp_path: Path) -> None:
    # python-dotenv lets the last line win: a later, older line must not override Honk's.
    env = tmp_path / ".env"
    env.write_text("APP_ID=1\nexport WEBHOOK_SECRET=old\nLOG_LEVEL=debug\nAPP_ID=2\n")
    write_dotenv(env, {"APP_ID": "77", "WEBHOOK_SECRET": "new"})
    assert read_dotenv(env) == {"APP_ID": "77", "WEBHOOK_SECRET": "new", "LOG_LEVEL": "debug"}
    assert env.read_text().count("APP_ID=") == 1
