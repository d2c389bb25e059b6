"""The only Ray code: TaskWorker and MergeActor around engine/ functions, the distributed driver, Tune sweeps."""
