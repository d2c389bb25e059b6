"""`imlca plan`: what a sweep will cost before it is launched.

`workload` counts the work of every trial from the sweep alone (tasks, images per epoch, alignments, which trials
share a cached trajectory); `clusters` reads the worker types of a Ray cluster config (or this machine); `figures`
holds the measured throughputs and fixed costs in a small JSON cache, which `probe` fills on this machine's device;
`estimate` turns work and figures into seconds per trial and packs the trials onto each worker type; `render`
prints the plan. Nothing here imports Ray or MLflow: the local node's resources and the Ray/Tune start-up are
measured by `imlca.orchestration.plan_probe`, which the CLI calls.
"""
