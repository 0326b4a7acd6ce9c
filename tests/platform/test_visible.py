from purellm.platform.visible import describe_selection, format_uuid, hidden_reason
from tests.platform.recorded import H100, MI50, W7500


def test_rocm_uuid_bytes_are_the_ascii_unique_id():
    assert format_uuid("30653534-3739-3231-3732-646135656562", hip=True) == "GPU-0e54792172da5eeb"
    nvidia = "5d7d6a7e-2f3b-1c4d-8e9f-0a1b2c3d4e5f"
    assert format_uuid(nvidia, hip=False) == f"GPU-{nvidia}"
    assert format_uuid("", hip=True) == ""


def test_uuid_in_rocr_visible_devices_maps_to_the_gpu():
    env = {"ROCR_VISIBLE_DEVICES": "GPU-0e54792172da5eeb"}
    (note,) = describe_selection(env, hip=True, gpus=[MI50])
    assert not note.problem
    assert "GPU-0e54792172da5eeb -> cuda:0" in note.effect


def test_unmatched_uuid_in_hip_visible_devices_points_to_rocr():
    env = {"HIP_VISIBLE_DEVICES": "GPU-ffffffffffffffff"}
    (note,) = describe_selection(env, hip=True, gpus=[MI50, W7500])
    assert "matches no GPU" in note.problem
    assert "ROCR_VISIBLE_DEVICES=GPU-ffffffffffffffff" in note.problem


def test_nvidia_uuid_prefix_matches():
    env = {"CUDA_VISIBLE_DEVICES": "GPU-5d7d6a7e"}
    (note,) = describe_selection(env, hip=False, gpus=[H100])
    assert "-> cuda:0" in note.effect and not note.problem


def test_hip_variables_are_ignored_by_cuda_builds():
    env = {"HIP_VISIBLE_DEVICES": "1", "CUDA_VISIBLE_DEVICES": "0"}
    notes = {n.var: n for n in describe_selection(env, hip=False, gpus=[H100])}
    assert "ignored" in notes["HIP_VISIBLE_DEVICES"].effect
    assert "ignored" not in notes["CUDA_VISIBLE_DEVICES"].effect


def test_empty_and_invalid_values():
    (empty,) = describe_selection({"CUDA_VISIBLE_DEVICES": ""}, hip=None, gpus=None)
    assert "hides every GPU" in empty.effect
    (bad,) = describe_selection({"HIP_VISIBLE_DEVICES": "0,gpu1"}, hip=True, gpus=[MI50])
    assert "'gpu1'" in bad.problem
    assert "empty value" in hidden_reason({"HIP_VISIBLE_DEVICES": " "}, hip=True)
    assert hidden_reason({"HIP_VISIBLE_DEVICES": "1"}, hip=False) == ""
