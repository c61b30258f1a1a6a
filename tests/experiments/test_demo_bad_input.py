"""Hostile and broken input to the demo, table by table: each row must give its exit status and one message naming
the file, case or key; the good cases are still done, nothing lands outside the output folder, and nothing already
computed is lost (the shared checks: helpers.assert_refused). docs/reliability.md lists the same checks."""

from helpers import refusal_test

# name -> (argv built from the test's folders, exit status, message pattern)
REFUSALS = {
    "demo key misspelt": (
        lambda t: ["demo", "--output", str(t["out"]), "prepare.synthetc=6"],
        2,
        r"unknown key prepare\.synthetc \(did you mean prepare\.synthetic\?\)",
    ),
    "demo run key misspelt, before any case is prepared": (
        lambda t: ["demo", "--output", str(t["out"]), "run.train.epoch=3"],
        2,
        r"unknown key train\.epoch \(did you mean train\.epochs\?\)",
    ),
}


test_bad_arguments_are_refused_before_any_work = refusal_test(REFUSALS)
