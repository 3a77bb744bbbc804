"""Record and replay: learning curves recorded once with the real trainable (`record`),
and every registry entry run against them on a simulated clock (`simulate`), over many
seeds, in minutes, with the regret to the table's known optimum (`service.reports.compare`).
"""
