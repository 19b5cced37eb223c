"""The CT workspace's AI findings: the panel, a base tab, and one tab per task (liver, kidney stone, COVID-19)."""
