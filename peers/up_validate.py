#!/usr/bin/env python3
"""Independent oracle: validate many plans with unified-planning's
sequential_plan_validator, in one process.

Input (file argument or stdin): tab-separated lines  DOMAIN  PROBLEM  PLAN.
Output (stdout): one line per input line, `valid`, `invalid` or
`rejected<TAB>reason` (unified-planning refused to read the plan, e.g. an
unknown action or object: that plan is invalid too).

Consecutive lines with the same (domain, problem) reuse the parsed problem.
Note: unified-planning's own CLI exits 0 for invalid plans, so we never use
its exit code; we read the validation status.
"""
import sys

from unified_planning.engines.results import ValidationResultStatus
from unified_planning.io import PDDLReader
from unified_planning.shortcuts import PlanValidator, get_environment


def main() -> None:
    get_environment().credits_stream = None
    source = open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin
    reader = PDDLReader()
    cached_key, problem = None, None
    with PlanValidator(name="sequential_plan_validator") as validator:
        for line in source:
            domain, problem_file, plan_file = line.rstrip("\n").split("\t")
            if (domain, problem_file) != cached_key:
                problem = reader.parse_problem(domain, problem_file)
                cached_key = (domain, problem_file)
            try:
                plan = reader.parse_plan(problem, plan_file)
            except Exception as e:  # an unreadable plan is an invalid plan
                print("rejected\t" + str(e).replace("\n", " ")[:200], flush=True)
                continue
            result = validator.validate(problem, plan)
            print("valid" if result.status == ValidationResultStatus.VALID else "invalid", flush=True)


if __name__ == "__main__":
    main()
