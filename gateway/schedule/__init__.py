"""The scheduler (issue 18, docs/scheduling.md): jobs that make time drive work, each pass idempotent.

- `clock`: the jobs' clock (real, or GATEWAY_NOW / `--now`);
- `lease`: one runner per job at a time, through a database lease that expires with its process;
- `writer`: the reserved principal `gateway:scheduler`, deterministic Task ids, the Provenance;
- `follow_up`, `control`: the jobs; `registry`: which jobs there are and one pass of all of them;
- `runner`: the thread of `gateway serve`; `cli`: `gateway schedule run` and `gateway worklist`."""
