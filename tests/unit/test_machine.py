"""harness.perf.cpu_model: the CPU's model name from /proc/cpuinfo (platform.processor() is empty on Linux)."""

from __future__ import annotations

import platform

from harness.perf import cpu_model, machine


def test_the_model_name_line_names_the_cpu(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14 96-Core Processor\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 9R14 96-Core Processor\n")
    assert cpu_model(info) == "AMD EPYC 9R14 96-Core Processor"


def test_without_cpuinfo_platform_answers(tmp_path):
    assert cpu_model(tmp_path / "absent") == (platform.processor() or platform.machine())


def test_machine_names_cpu_threads_and_device():
    assert set(machine()) == {"cpu", "cpu_count", "torch_threads", "device"} and machine()["cpu"]
