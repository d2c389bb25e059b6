"""The only Ray code: TaskWorker and CentralActor around engine/ functions, the distributed driver, Tune sweeps."""
