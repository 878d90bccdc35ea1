"""Coverage-guided fuzzing (atheris) of what the cache and the webhook read from outside: `make fuzz`,
`python -m fuzz [TARGET]`. One module per target; each target's `check` holds the code to the rules the test suite's
property tests hold it to, and tests/fuzz runs every `check` over its seed corpus (fuzz/corpus) without atheris."""
