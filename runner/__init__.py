"""SSH mode (push): run one workflow step on an external host through ansible-runner.

Module scripts (program A) need only these names:

    from runner import HostSpec, StepSpec, run_step
    result = run_step(StepSpec(host=HostSpec.parse("user@host:22", key=...), results_dir=...))
    sys.exit(result.exit_code)
"""

from runner.driver import resume_step, run_step
from runner.errors import StepError, UsageError
from runner.steps import HostSpec, Outcome, StepResult, StepSpec

__all__ = [
    "HostSpec",
    "Outcome",
    "StepError",
    "StepResult",
    "StepSpec",
    "UsageError",
    "resume_step",
    "run_step",
]
