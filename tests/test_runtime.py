"""Where torchrun put this process: one reader of its environment for localize and the trainer."""
from retina_fgvis.runtime import torchrun_place
from retina_fgvis.training.distributed import launched_by_torchrun


def test_plain_start_is_rank_0_of_a_world_of_one(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_place() == (0, 1, 0)
    assert not launched_by_torchrun()


def test_torchrun_environment_is_read(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    place = torchrun_place()
    assert (place.rank, place.world_size, place.local_rank) == (3, 4, 1)
    assert launched_by_torchrun()
