"""libiscsi's C API through ctypes, for the interop tests that need what libiscsi-bin's tools do not
offer: PERSISTENT RESERVE OUT with APTPL, or a UNIT ATTENTION's sense. `runPython` puts this folder on
PYTHONPATH."""
import ctypes
import sys

lib = ctypes.CDLL("libiscsi.so.7")
lib.iscsi_create_context.restype = ctypes.c_void_p
lib.iscsi_create_context.argtypes = [ctypes.c_char_p]
# The synchronous calls return a `struct scsi_task *`.
_TASK_CALLS = ("iscsi_testunitready_sync", "iscsi_readcapacity16_sync", "iscsi_persistent_reserve_out_sync",
               "iscsi_persistent_reserve_in_sync")
for name in ("iscsi_set_targetname", "iscsi_full_connect_sync", "iscsi_set_session_type",
             "iscsi_get_error") + _TASK_CALLS:
    getattr(lib, name).argtypes = None
for name in _TASK_CALLS + ("scsi_datain_unmarshall",):
    getattr(lib, name).restype = ctypes.c_void_p
lib.scsi_datain_unmarshall.argtypes = [ctypes.c_void_p]
lib.iscsi_get_error.restype = ctypes.c_char_p

SESSION_NORMAL = 2


class Sense(ctypes.Structure):
    _fields_ = [("error_type", ctypes.c_ubyte), ("key", ctypes.c_int), ("ascq", ctypes.c_int)]


class Task(ctypes.Structure):
    """The head of `struct scsi_task`, as far as its sense."""
    _fields_ = [("status", ctypes.c_int), ("cdb_size", ctypes.c_int), ("xfer_dir", ctypes.c_int),
                ("expxferlen", ctypes.c_int), ("cdb", ctypes.c_ubyte * 16), ("residual_status", ctypes.c_int),
                ("residual", ctypes.c_size_t), ("sense", Sense)]


class OutBasic(ctypes.Structure):
    """`struct scsi_persistent_reserve_out_basic`."""
    _fields_ = [("key", ctypes.c_uint64), ("sa_key", ctypes.c_uint64), ("spec_i_pt", ctypes.c_uint8),
                ("all_tg_pt", ctypes.c_uint8), ("aptpl", ctypes.c_uint8)]


def connect(url, initiator):
    """Logs `initiator` in to `iscsi://PORTAL/TARGET/LUN` (exits on failure): the context and the LUN."""
    portal, target, lun = url[len("iscsi://"):].split("/")
    ctx = ctypes.c_void_p(lib.iscsi_create_context(initiator.encode()))
    lib.iscsi_set_targetname(ctx, target.encode())
    lib.iscsi_set_session_type(ctx, SESSION_NORMAL)
    if lib.iscsi_full_connect_sync(ctx, portal.encode(), int(lun)) != 0:
        sys.exit("login: " + lib.iscsi_get_error(ctx).decode())
    return ctx, int(lun)


def task(ctx, pointer):
    """The task a synchronous call returned (exits when it returned none)."""
    if not pointer:
        sys.exit("no task: " + lib.iscsi_get_error(ctx).decode())
    return ctypes.cast(pointer, ctypes.POINTER(Task)).contents


def prout(ctx, lun, service_action, key=0, sa_key=0, kind=0, aptpl=0):
    """PERSISTENT RESERVE OUT with basic parameters: the task pointer."""
    params = OutBasic(key, sa_key, 0, 0, aptpl)
    return lib.iscsi_persistent_reserve_out_sync(ctx, lun, service_action, 0, kind, ctypes.byref(params))
