"""Sinks: where a finished run goes. Each reads the finished `pipeline.results.FinishedRun` and never writes into it.

* `figures` - forest, calibration and SHAP figures, rendered in worker processes in the background;
* `tracking` - the MLflow parent run and its model runs (`mbi_predict.track`), the final models as LoggedModels;
  returns the summary with the tracker's facts added, as a new dict (`pipeline.summary.with_tracking`);
* `run_folder` - the run folder: outputs staged in a hidden folder inside it, then moved into place,
  ``summary.json`` last, so a reader who sees ``summary.json`` sees a complete run.

Sinks sit in the layer of `track`, `report` and `deploy` (they are the pipeline's adapters to them); the stages
below them never import a sink.
"""
