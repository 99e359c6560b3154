"""core.serving.ModelCopies: a worker borrows a model copy for a frame, first come first served."""
import threading
import time

import pytest

from core.errors import ModelUnavailable
from core.serving import ModelCopies


def test_a_returned_copy_goes_to_the_borrower_waiting_longest():
    copies = ModelCopies(["only"])
    order, started = [], []

    def borrow(name):
        started.append(name)
        with copies.borrowed():
            order.append(name)

    with copies.borrowed():  # the copy is busy while three borrowers queue up, one after the other
        threads = []
        for name in ("first", "second", "third"):
            thread = threading.Thread(target=borrow, args=(name,))
            thread.start()
            threads.append(thread)
            while len(copies.waiting) < len(threads):  # this one is queued before the next starts
                time.sleep(0.001)
    for thread in threads:
        thread.join(10)
    assert order == ["first", "second", "third"]
    assert list(copies.free) == ["only"] and not copies.waiting


def test_a_borrower_gives_up_at_its_timeout_and_leaves_the_queue():
    copies = ModelCopies(["only"])
    with copies.borrowed():
        with pytest.raises(ModelUnavailable, match="all 1 model copies stayed busy for the 0.05 s"):
            with copies.borrowed(timeout=0.05):
                pass
        assert not copies.waiting
    with copies.borrowed(timeout=0) as model:  # free again, so no wait at all
        assert model == "only"


def test_one_model_shared_by_every_worker_is_lent_to_each():
    shared = object()
    copies = ModelCopies([shared] * 2)
    with copies.borrowed(timeout=0) as a, copies.borrowed(timeout=0) as b:
        assert a is b is shared
