"""What tests/python_bridge.rs checks from the Python side of a
`multiproc serve --python-address` server.

Usage: checks.py HOST PORT AUTHKEY_FILE COMMAND [ARGS...]

Each command exits 0 when everything it checks holds, and 1 (with the
reason on stderr) otherwise.
"""

import multiprocessing
import os
import pickle
import queue
import socket
import struct
import sys
import time
from multiprocessing.connection import Client
from multiprocessing.managers import BaseManager, RemoteError


class QueueManager(BaseManager):
    pass


QueueManager.register('get_task_queue')
QueueManager.register('get_result_queue')
QueueManager.register('get_done_queue')
QueueManager.register('get_nope')


def fail(msg):
    print(f'checks.py ({sys.version.split()[0]}): {msg}', file=sys.stderr)
    sys.exit(1)


def expect(cond, msg):
    if not cond:
        fail(msg)


# The values that travel, with their types and order (the Rust test builds
# the same list as multiproc::py::Value).
SAMPLES = [
    None,
    True,
    False,
    0,
    -1,
    255,
    65536,
    -2**31,
    2**63 - 1,
    -2**63,
    1.5,
    -0.0,
    float('inf'),
    '',
    'héllo wörld',
    'x' * 300,
    b'',
    b'\x00\xffbytes',
    (),
    (1,),
    (1, 'two', 3.0, None),
    [],
    [1, [2, [3]]],
    {},
    {'z': 1, 'a': 2, 3: [None], (1, 2): b'k'},
    {'nested': {'b': (True, False), 'a': []}},
]


def same(a, b):
    """Equal, with the same types all the way down and dicts in the same order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and a == 0.0:
        return str(a) == str(b)
    return a == b


def manager(host, port, authkey):
    m = QueueManager(address=(host, port), authkey=authkey)
    m.connect()
    return m


def roundtrip_put(m):
    q = m.get_task_queue()
    for v in SAMPLES:
        q.put(v)


def roundtrip_get(m):
    q = m.get_result_queue()
    got = [q.get(timeout=60) for _ in SAMPLES]
    for want, have in zip(SAMPLES, got):
        expect(same(want, have), f'{want!r} came back as {have!r}')


def errors(m, host, port, authkey):
    q = m.get_task_queue()
    # queue.Empty, from a timed get and a non-blocking one.
    for call in (lambda: q.get(timeout=0.2), q.get_nowait,
                 lambda: q.get(False), lambda: q.get(block=False, timeout=5)):
        try:
            call()
            fail('a get on an empty queue returned')
        except queue.Empty:
            pass
    # RemoteError: an unknown typeid, a method the proxy does not expose.
    try:
        m.get_nope()
        fail('an unknown typeid was created')
    except RemoteError as e:
        expect('get_nope' in str(e), f'unexpected RemoteError text {e}')
    try:
        q._callmethod('nonexistent')
        fail('a non-exposed method ran')
    except RemoteError as e:
        expect('nonexistent' in str(e), f'unexpected RemoteError text {e}')
    # Values that do not travel are TypeError / OverflowError at the put.
    for bad, exc in (({1, 2}, TypeError), (bytearray(b'x'), TypeError),
                     (2**70, OverflowError), (ValueError('x'), TypeError),
                     (queue.Queue, TypeError)):
        try:
            q.put(bad)
            fail(f'{bad!r} was accepted')
        except exc:
            pass
    # Arguments as Python binds them.
    try:
        q.get(True, 1, 2)
        fail('get() took three arguments')
    except TypeError:
        pass
    try:
        q.get(timeout=-1)
        fail('a negative timeout was accepted')
    except ValueError:
        pass
    # task_done() more often than items were put.
    d = m.get_done_queue()
    d.put('job')
    expect(d.get(timeout=10) == 'job', 'the done queue lost its item')
    d.task_done()
    d.join()
    try:
        d.task_done()
        fail('task_done() was accepted once too often')
    except ValueError:
        pass
    expect(q.qsize() == 0 and q.empty() and not q.full(), 'qsize/empty/full')
    # A wrong key is AuthenticationError, for the manager and for a bare client.
    wrong = QueueManager(address=(host, port), authkey=b'wrong ' + authkey)
    try:
        wrong.connect()
        fail('a wrong key connected')
    except multiprocessing.AuthenticationError:
        pass
    try:
        Client((host, port), authkey=b'wrong')
        fail('a wrong key connected')
    except multiprocessing.AuthenticationError:
        pass


def auth_refused(host, port, authkey):
    try:
        manager(host, port, authkey)
    except multiprocessing.AuthenticationError:
        return
    fail('the server accepted this client')


def wait_sleepers(m, typeid, n, field):
    """Waits (60 s at most) until the debug info shows at least n clients
    waiting on queue `typeid`: field 'python_getters' or 'sleepers'."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in m._debug_info().splitlines():
            if line.strip().startswith(f'{typeid} (queue):'):
                count = int(line.split(f'{field}=')[1].split()[0])
                if count >= n:
                    return
        time.sleep(0.01)
    fail(f'fewer than {n} {field} on {typeid}:\n{m._debug_info()}')


def blocking_get(m):
    print(os.getpid(), flush=True)
    got = m.get_task_queue().get()
    fail(f'the getter got {got!r} although it should have been killed')


class Boom:
    """What a hostile client pickles: os.system, called with a command."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def hostile(m, host, port, authkey, marker):
    q = m.get_task_queue()
    ident = q._id
    c = Client((host, port), authkey=authkey)
    c.send((None, 'accept_connection', ('hostile',), {}))
    expect(c.recv() == ('#RETURN', None), 'accept_connection failed')

    def request(*args):
        return pickle.dumps((ident,) + args, protocol=4)

    deep_lists = b'\x80\x04' + b']' * 100_000 + b'a' * 99_999 + b'.'
    deep_marks = b'\x80\x04' + b'(' * 100_000 + b'N' + b't' * 100_000 + b'.'
    bomb = b'\x80\x04]q\x000'
    for level in range(30):
        bomb += b'(' + b'h' + bytes([level]) + (b'h' + bytes([level])) * 9
        bomb += b'lq' + bytes([level + 1]) + (b'0' if level < 29 else b'')
    bomb += b'.'
    long4 = b'\x80\x04\x8b' + struct.pack('<i', 10_000_000) + b'\x01' * 10_000_000 + b'.'
    cases = {
        'a global (os.system)': pickle.dumps(Boom(marker), protocol=4),
        'a global inside a request': request('put', (Boom(marker),), {}),
        'a protocol-2 GLOBAL': b'\x80\x02cos\nsystem\nq\x00.',
        'INST': b'\x80\x02(X\x05\x00\x00\x00touchios\nsystem\n.',
        '100,000-deep lists': deep_lists,
        '100,000 nested marks': deep_marks,
        'a memo bomb': bomb,
        'a 10 MB LONG4': long4,
        'a truncated pickle': request('put', (list(range(1000)),), {})[:-10],
        'a frame past the end': b'\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00N.',
        'a lone surrogate': request('put', ('\ud800',), {}),
        'bytes after STOP': request('qsize', (), {}) + b'N.',
        'protocol 0': pickle.dumps((ident, 'qsize', (), {}), protocol=0),
        'an unknown opcode': b'\x80\x04\xff.',
        'a persistent id': b'\x80\x04N\x51.',
        'an extension code': b'\x80\x04\x82\x01.',
        'an out-of-band buffer': b'\x80\x05\x97.',
        'a set': request('put', ({1, 2},), {}),
        'a bytearray': pickle.dumps((ident, 'put', (bytearray(b'x'),), {}), protocol=5),
        'not a request': pickle.dumps([1, 2, 3], protocol=4),
    }
    for name, payload in cases.items():
        c.send_bytes(payload)
        kind, result = c.recv()
        expect(kind in ('#ERROR', '#TRACEBACK'), f'{name}: answered {kind} {result!r}')
        # The connection stays usable, and so does a fresh one.
        c.send((ident, 'qsize', (), {}))
        kind, n = c.recv()
        expect(kind == '#RETURN' and isinstance(n, int), f'after {name}: {kind} {n!r}')
        expect(m.get_task_queue().qsize() == n, f'after {name}: a fresh client')
        expect(not os.path.exists(marker), f'{name} ran a command')

    # A frame that announces more than it sends, then a close: that
    # connection ends, nobody else notices.
    t = Client((host, port), authkey=authkey)
    t.send((None, 'accept_connection', ('truncated',), {}))
    expect(t.recv() == ('#RETURN', None), 'accept_connection failed')
    s = socket.socket(fileno=os.dup(t.fileno()))
    s.sendall(struct.pack('!i', 1000) + b'\x80\x04partial')
    s.shutdown(socket.SHUT_WR)
    try:
        t.recv()
        fail('a truncated frame was answered')
    except EOFError:
        pass
    s.close()
    t.close()
    # A frame longer than the server takes: refused from its header.
    t = Client((host, port), authkey=authkey)
    t.send((None, 'accept_connection', ('huge',), {}))
    expect(t.recv() == ('#RETURN', None), 'accept_connection failed')
    t._send(struct.pack('!i', -1) + struct.pack('!Q', 2**40))
    try:
        t.recv()
        fail('a 1 TiB frame was answered')
    except (EOFError, ConnectionError):
        pass
    t.close()
    # An unauthenticated peer gets #FAILURE# and a close, nothing more.
    with socket.create_connection((host, port)) as raw:
        f = raw.makefile('rb')
        (n,) = struct.unpack('!i', f.read(4))
        expect(f.read(n).startswith(b'#CHALLENGE#'), 'no challenge')
        raw.sendall(struct.pack('!i', 16) + b'\x00' * 16)
        (n,) = struct.unpack('!i', f.read(4))
        expect(f.read(n) == b'#FAILURE#', 'no #FAILURE#')
        expect(f.read() == b'', 'the server said more than #FAILURE#')
    c.send((ident, 'qsize', (), {}))
    expect(c.recv()[0] == '#RETURN', 'the hostile connection stopped working')


def main():
    host, port, key_file, command, *args = sys.argv[1:]
    port = int(port)
    with open(key_file, 'rb') as f:
        authkey = f.read().rstrip(b'\r\n')
    if command == 'auth-refused':
        return auth_refused(host, port, authkey)
    m = manager(host, port, authkey)
    if command == 'roundtrip-put':
        roundtrip_put(m)
    elif command == 'roundtrip-get':
        roundtrip_get(m)
    elif command == 'errors':
        errors(m, host, port, authkey)
    elif command == 'wait-python-getters':
        wait_sleepers(m, args[0], int(args[1]), 'python_getters')
    elif command == 'wait-sleepers':
        wait_sleepers(m, args[0], int(args[1]), 'sleepers')
    elif command == 'blocking-get':
        blocking_get(m)
    elif command == 'hostile':
        hostile(m, host, port, authkey, args[0])
    else:
        fail(f'unknown command {command}')


if __name__ == '__main__':
    main()
