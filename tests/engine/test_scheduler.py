"""Scheduler: token budget, chunked prefill, admission limits, preemption, aborts."""

from purellm.engine.block_manager import BlockManager
from purellm.engine.scheduler import Scheduler
from purellm.engine.sequence import Sequence, SequenceStatus
from purellm.sampling_params import SamplingParams


def _scheduler(num_blocks=16, block_size=4, max_num_seqs=8, budget=64) -> Scheduler:
    return Scheduler(BlockManager(num_blocks, block_size), max_num_seqs, budget)


def _seq(n: int, start: int = 0) -> Sequence:
    return Sequence(list(range(start, start + n)), SamplingParams())


def _run(sched: Scheduler, token: int = 1):
    """One step as the engine does it: schedule, 'compute', append a token to samplers."""
    out = sched.schedule()
    sched.update(out)
    for item in out.scheduled:
        if item.samples:
            item.seq.output_token_ids.append(token)
    return out


def test_prefill_then_decode():
    sched = _scheduler()
    seq = _seq(10)
    sched.add(seq)
    out = _run(sched)
    assert [(s.num_new_tokens, s.samples) for s in out.scheduled] == [(10, True)]
    out = _run(sched)
    assert [(s.num_new_tokens, s.samples) for s in out.scheduled] == [(1, True)]


def test_chunked_prefill_under_budget_and_running_first():
    sched = _scheduler(budget=8)
    first, long = _seq(3), _seq(20, 100)
    sched.add(first)
    _run(sched)
    sched.add(long)
    out = _run(sched)
    assert [(s.seq is first, s.num_new_tokens, s.samples) for s in out.scheduled] == [
        (True, 1, True),
        (False, 7, False),
    ]
    out = _run(sched)
    assert [s.num_new_tokens for s in out.scheduled] == [1, 7]
    out = _run(sched)
    assert [(s.num_new_tokens, s.samples) for s in out.scheduled] == [(1, True), (6, True)]


def test_max_num_seqs_limits_admission():
    sched = _scheduler(max_num_seqs=2)
    for i in range(3):
        sched.add(_seq(4, i * 10))
    _run(sched)
    assert len(sched.running) == 2 and len(sched.waiting) == 1


def test_preempts_newest_when_blocks_run_out_and_recovers():
    sched = _scheduler(num_blocks=4, block_size=4)
    old, new = _seq(7), _seq(7, 50)
    sched.add(old)
    sched.add(new)
    _run(sched)  # each holds 2 blocks for 7 tokens + 1 sampled
    _run(sched)  # the 8th token fills the 2nd block
    _run(sched)  # both need a 3rd block: none free, so `new` is preempted
    assert sched.num_preemptions == 1
    assert new.status is SequenceStatus.WAITING and new.num_computed_tokens == 0
    assert old.status is SequenceStatus.RUNNING
    sched.finish(old, "stop")
    out = _run(sched)
    assert out.scheduled[0].seq is new and out.scheduled[0].samples
    assert new.num_computed_tokens == new.num_tokens - 1  # recomputed, partly from the cache
    sched.block_manager.check_integrity([new])


def test_abort_frees_blocks_at_once():
    sched = _scheduler()
    seqs = [_seq(9, i * 20) for i in range(3)]
    for seq in seqs:
        sched.add(seq)
    _run(sched)
    waiting = _seq(5, 500)
    sched.add(waiting)
    for seq in seqs + [waiting]:
        sched.finish(seq, "abort")
    assert not sched.has_work()
    assert sched.block_manager.num_free_blocks == 16
    sched.block_manager.check_integrity([])


def test_repeated_prompt_admitted_with_cached_prefix():
    sched = _scheduler()
    a = _seq(10)
    sched.add(a)
    _run(sched)
    sched.finish(a, "stop")
    b = _seq(10)
    sched.add(b)
    out = _run(sched)
    assert b.num_cached_tokens == 8
    assert out.scheduled[0].num_new_tokens == 2
