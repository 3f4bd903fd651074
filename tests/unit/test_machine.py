from agedistill.pipeline.machine import cpu_name, describe
from agedistill.pipeline.tracking import run_tags

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480C
flags\t\t: fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""


def test_cpu_name_reads_model_and_bf16_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    assert cpu_name(info) == "Intel(R) Xeon(R) Platinum 8480C (amx_bf16, amx_tile, avx512_bf16)"
    info.write_text(CPUINFO.replace(" avx512_bf16 amx_bf16 amx_tile", ""))
    assert cpu_name(info) == "Intel(R) Xeon(R) Platinum 8480C (no bf16 instructions)"


def test_cpu_name_without_cpuinfo_still_names_something(tmp_path):
    assert cpu_name(tmp_path / "missing")  # platform.processor() or the machine type
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd\n")  # no model name line
    assert cpu_name(tmp_path / "arm").endswith("(no bf16 instructions)")


def test_mlflow_runs_are_tagged_with_the_machine():
    tags = run_tags("distill", {})
    machine = describe()
    assert tags["machine.cpu"] == machine["cpu"] and tags["machine.torch"] == machine["torch"]
