"""The demo federation's nodes by name: the one place tests, benchmarks and the demo take their codes from.

The city, two counties (资阳区 and 赫山区, so that cross-county routing can be shown), one town in
each, two villages under 资阳区's town (so that "no other village ever receives the case" can be
checked) and one under 赫山区's.
"""

from __future__ import annotations

CITY = "430900000000"  # 益阳市
ZIYANG = "430902000000"  # 资阳区
HESHAN = "430903000000"  # 赫山区
ZIYANG_TOWN = "430902102000"  # 迎风桥镇
HESHAN_TOWN = "430903101000"  # 八字哨镇
ZIYANG_VILLAGE = "430902102201"  # 迎风桥第1村
ZIYANG_VILLAGE_2 = "430902102202"  # 迎风桥第2村
HESHAN_VILLAGE = "430903101201"  # 八字哨第1村

DEMO_NODES = (CITY, ZIYANG, HESHAN, ZIYANG_TOWN, HESHAN_TOWN, ZIYANG_VILLAGE, ZIYANG_VILLAGE_2, HESHAN_VILLAGE)
