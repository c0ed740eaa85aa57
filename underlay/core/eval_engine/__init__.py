"""The eval-run engine: rows → candidate sample → graders → per-row results, as durable, resumable work.

Shared by every API that evaluates rows: the OpenAI Evals API (``/v1/evals`` runs) now, and the extended
API's benchmarks and eval jobs next. Four small interfaces, each in its own module:

- :class:`~underlay.core.eval_engine.graders.Grader` (``name``, ``type``, ``async grade(row)``): one
  verdict per row. The OpenAI testing criteria are built by :func:`build_grader`; scoring functions can
  be wrapped the same way.
- :class:`~underlay.core.eval_engine.candidates.Candidate` (``model``, ``async sample(row)``): what
  answers each row, through the inference or responses router (an agent is ``agent/<name>``).
- :class:`~underlay.core.eval_engine.runner.RowSink`: where outcomes are committed and progress written;
  the API's store implements it.
- :func:`run_rows`: the loop, called from a job handler with the job's checkpoint.

Templates (``{{item.x}}``, ``{{sample.output_text}}``) are rendered by :mod:`.templates`; text metrics
live in :mod:`.metrics`.
"""

from underlay.core.eval_engine.candidates import Candidate, ChatCandidate, ResponsesCandidate, Sample, preset_sample
from underlay.core.eval_engine.graders import Grader, GradeResult, RowError, RowInput, build_grader
from underlay.core.eval_engine.runner import Counts, Limits, RowOutcome, RowSink, run_row, run_rows

__all__ = [
    "Candidate",
    "ChatCandidate",
    "Counts",
    "GradeResult",
    "Grader",
    "Limits",
    "ResponsesCandidate",
    "RowError",
    "RowInput",
    "RowOutcome",
    "RowSink",
    "Sample",
    "build_grader",
    "preset_sample",
    "run_row",
    "run_rows",
]
