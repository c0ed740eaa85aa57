"""``underlay fine-tune``: the commands parse, and the progress line says step, loss, speed and ETA."""

from __future__ import annotations

from underlay.cli.fine_tune_cmd import progress_line
from underlay.cli.main import build_parser


def test_progress_line() -> None:
    line = progress_line({"step": 6, "total_steps": 24, "train_loss": 1.23456, "tokens_per_second": 312.4}, 65.0)
    assert line == "step 6/24 [######..................]  loss 1.235  312 tok/s  ETA 1m05s"
    assert progress_line({"step": 0, "total_steps": 0}, None) == "step 0/1 [........................]"


def test_commands_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(["fine-tune", "create", "data.jsonl", "--model", "m", "--epochs", "2", "--follow"])
    assert (args.file, args.model, args.epochs, args.follow, args.batch_size) == ("data.jsonl", "m", 2, True, None)
    for argv in (["fine-tune", "list"], ["fine-tune", "show", "ftjob-1"], ["fine-tune", "events", "ftjob-1"]):
        assert callable(parser.parse_args(argv).func)
    assert parser.parse_args(["fine-tune", "cancel", "ftjob-1"]).job_id == "ftjob-1"
