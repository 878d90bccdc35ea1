/* recvfrom and sendto for the cache's UDP listener at a light, steady rate, keeping each client's address as the
 * raw sockaddr bytes the kernel gave.
 *
 * Why: at a steady rate every query wakes the listener alone and is read with recvfrom and answered with sendto.
 * Python's socket methods turn the client's address into a (host, port) tuple on the way in (inet_ntop and a
 * string, ~2.3k instructions) and parse it back on the way out (~1.8k), and drop and retake the GIL around each
 * call (~1.4k): a fifth of the work of a replayed hit (docs/performance.md, "The steady rate"). Here the address
 * stays raw, the listener maps it to the tuple it has seen before (a dict lookup), and the GIL is kept: the socket
 * is non-blocking and both calls return at once.
 *
 * Built with the mypyc-compiled hot path (setup.py with LOCALDNS_COMPILE=1, tools/compile_cache.py); where it is
 * not built the listener uses the socket's own methods (cache/batchio.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <sys/socket.h>

/* What recvfrom reads into before the bytes object is made: as large as the largest `size` accepted. */
static char datagram[65536];

static int
fd_of(PyObject *arg, int *fd)
{
    long value = PyLong_AsLong(arg);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (value < 0 || value > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "not a file descriptor");
        return -1;
    }
    *fd = (int)value;
    return 0;
}

/* recvfrom(fd, size) -> (data, sockaddr bytes), or None when nothing is queued. At most `size` bytes of the
 * datagram are returned (a longer one is cut, as socket.recvfrom(size) cuts it); errors raise OSError. */
static PyObject *
rawudp_recvfrom(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    Py_ssize_t size;
    struct sockaddr_storage address;
    socklen_t address_len = sizeof(address);
    ssize_t got;
    PyObject *data, *raw, *pair;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "recvfrom(fd, size)");
        return NULL;
    }
    if (fd_of(args[0], &fd) < 0) {
        return NULL;
    }
    size = PyLong_AsSsize_t(args[1]);
    if (size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (size < 0 || size > (Py_ssize_t)sizeof(datagram)) {
        PyErr_SetString(PyExc_ValueError, "size must be between 0 and 65536");
        return NULL;
    }
    got = recvfrom(fd, datagram, (size_t)size, MSG_DONTWAIT, (struct sockaddr *)&address, &address_len);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            Py_RETURN_NONE;
        }
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (address_len > sizeof(address)) {
        address_len = sizeof(address);
    }
    data = PyBytes_FromStringAndSize(datagram, got);
    if (data == NULL) {
        return NULL;
    }
    raw = PyBytes_FromStringAndSize((const char *)&address, address_len);
    if (raw == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    pair = PyTuple_New(2);
    if (pair == NULL) {
        Py_DECREF(data);
        Py_DECREF(raw);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, data);  /* the tuple takes both references */
    PyTuple_SET_ITEM(pair, 1, raw);
    return pair;
}

/* sendto(fd, data, sockaddr bytes) -> bytes sent. BlockingIOError when the socket buffer is full, OSError for
 * anything else (the errno's own subclass, as socket.sendto raises). */
static PyObject *
rawudp_sendto(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    ssize_t sent;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "sendto(fd, data, address)");
        return NULL;
    }
    if (fd_of(args[0], &fd) < 0) {
        return NULL;
    }
    if (!PyBytes_Check(args[1]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "data and address must be bytes");
        return NULL;
    }
    sent = sendto(fd, PyBytes_AS_STRING(args[1]), (size_t)PyBytes_GET_SIZE(args[1]), MSG_DONTWAIT,
                  (const struct sockaddr *)PyBytes_AS_STRING(args[2]), (socklen_t)PyBytes_GET_SIZE(args[2]));
    if (sent < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromSsize_t(sent);
}

static PyMethodDef rawudp_methods[] = {
    {"recvfrom", (PyCFunction)(void (*)(void))rawudp_recvfrom, METH_FASTCALL,
     "recvfrom(fd, size) -> (data, sockaddr bytes) or None: one datagram, if one is queued."},
    {"sendto", (PyCFunction)(void (*)(void))rawudp_sendto, METH_FASTCALL,
     "sendto(fd, data, sockaddr bytes) -> bytes sent."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef rawudp_module = {
    PyModuleDef_HEAD_INIT, "rawudp",
    "recvfrom and sendto with the client's address as raw sockaddr bytes (cache/rawudp.c).", -1, rawudp_methods,
};

PyMODINIT_FUNC
PyInit_rawudp(void)
{
    return PyModule_Create(&rawudp_module);
}
