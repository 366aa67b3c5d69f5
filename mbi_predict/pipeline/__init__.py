"""The experiment run as a pipeline of stages (``mbi-predict run CONFIG``, `mbi_predict.run_experiment`).

Each stage owns one block of the results, declares the work it needs as jobs (batched in one parallel call per
kind of work) and builds its block as a pure function of its inputs; sinks read the finished results and never
write into them. In the order they run:

1. `load` - config, data, prepared analysis data, fold plan, preflight (`RunInputs`);
2. `folds` - one job per (model, held-out trial), one parallel call; each model's performance block;
3. the run-level batch (`batch.run_batch`, one parallel call): `final_models`, the permutation null of
   `explanations`, `interactions`, `average_effect`, `projection`;
4. `heterogeneity` - the verdict's permutation calibration (one parallel call), per-model and run verdicts;
5. `results.build_results` - every block assembled, with `reference` (comparison to the reference model) and
   `subgroups` (group effects, harm, treatment rule, calibration for benefit), into `FinishedRun`;
6. sinks (`sinks.figures`, `sinks.tracking`, `sinks.run_folder`) - figures, MLflow, the run folder.

`run.run_experiment` composes them; `mbi_predict.runner` re-exports it for older imports. Nothing is imported here,
so importing one stage does not import the others.
"""
