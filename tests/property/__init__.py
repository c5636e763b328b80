"""Property harness: random pipelines over random data with injected faults, checked
against a plain-Python oracle (issue 14).

- ``gen``: a seeded generator of JSON case specs (data, pipeline, consumer, fault);
- ``udfs``: every UDF the pipelines call (module level, deterministic, data-driven
  failures, one-shot faults guarded by flag files);
- ``canon``: the canonical form rows are compared in;
- ``oracle``: the plain-Python evaluation of a spec;
- ``driver``: ``python -m tests.property.driver spec.json first|resume`` runs a spec;
- ``harness``: runs one case (driver subprocesses, faults, leak checks) and judges it.
"""
