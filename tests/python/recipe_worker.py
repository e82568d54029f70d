"""The worker of the "remote manager" recipe in Python's multiprocessing
documentation, as a user writes it: a BaseManager subclass that registers
get_task_queue and get_result_queue, connect(), then get / put. Nothing in it
knows the server is multiproc's.

Usage: recipe_worker.py HOST PORT AUTHKEY_FILE NAME

Squares each task until it takes 'STOP', putting (NAME, n, n * n) on the
result queue.
"""

import sys
from multiprocessing.managers import BaseManager


class QueueManager(BaseManager):
    pass


QueueManager.register('get_task_queue')
QueueManager.register('get_result_queue')


def main():
    host, port, key_file, name = sys.argv[1:5]
    with open(key_file, 'rb') as f:
        authkey = f.read().rstrip(b'\r\n')
    m = QueueManager(address=(host, int(port)), authkey=authkey)
    m.connect()
    task = m.get_task_queue()
    result = m.get_result_queue()
    for n in iter(task.get, 'STOP'):
        result.put((name, n, n * n))


if __name__ == '__main__':
    main()
