"""Where finished MP4s live: a results backend behind one interface (`local` directory or `s3`).

    backend = open_results(config.results, config.data_dir, config.s3_endpoint_url)
    out = backend.scratch_path(owner, job_id)        # the engine writes here (atomic rename)
    key = backend.publish(owner, job_id, out)        # recorded as the job's `result_path`
    backend.size(key), backend.read(key, start, end), backend.delete(key)

Any API node can serve any result as long as it reaches the same backend: a shared mount for
`local`, the same bucket for `s3`. Records made under one backend stay readable after switching
to `s3` (relative paths are read from the local data directory).
"""

from server.results.local import LocalResults
from server.results.s3 import S3Results, parse_s3_location
from server.results.store import ResultStore, open_results, write_directories

__all__ = ["LocalResults", "ResultStore", "S3Results", "open_results", "parse_s3_location", "write_directories"]
