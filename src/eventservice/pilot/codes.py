"""Error codes the pilot reports for ranges (``errorCode``) and jobs (``pilotErrorCode``).

Only :data:`PREEMPTED` is part of the wire contract (docs/protocol.md): a range failed
with it is released without using up ``esMaxAttempt``. The others are informational.
"""

from __future__ import annotations

#: The pilot hands a range back unprocessed (drain, signal, kill): not the range's fault.
PREEMPTED = 1700

# Range errors.
PAYLOAD_RANGE_ERROR = 1220  #: the payload reported a retryable ``ERR_*`` for the range
PAYLOAD_RANGE_FATAL = 1228  #: the payload reported a fatal ``ERR_*`` for the range
BAD_MESSAGE = 1221  #: the payload sent a malformed message naming the range
PAYLOAD_CRASHED = 1222  #: the payload (or its worker) died while holding the range
OUTPUT_MISSING = 1223  #: the reported output file does not exist
STAGEOUT_FAILED = 1137  #: the output could not be shipped to any storage

# Job errors.
JOB_PAYLOAD_FAILED = 1305  #: the payload exited non-zero
JOB_KILLED = 1144  #: the dispatcher said ``tobekilled``
JOB_STAGEIN_FAILED = 1099  #: an input could not be fetched or verified
JOB_STAGEOUT_FAILED = 1137  #: an output could not be shipped
JOB_BAD_DEFINITION = 1300  #: the job's fields make no sense to the pilot
