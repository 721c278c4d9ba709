"""Everything headrot draws and writes for people: figures (PNG) and the report page (HTML).

A leaf package: it imports nothing from headrot.stages, headrot.evaluate or headrot.train
(tests/test_report_imports.py walks its imports); the stages hand it numbers and pixels.

    grid            image_grid, to_uint8, png_bytes: labelled pixel grids (training sheets too)
    contact_sheet   one row per source, one column per delta (render stage)
    mean_faces      mean face per light class x yaw bin (embed stage)
    plots           metric-vs-delta lines and the best/median/worst cases sheet (evaluate)
    trajectory_fit  the fit's centroids against its lines (evaluate, from trajectories.parquet)
    html            the self-contained page's building blocks
    page            report.html and the evaluate figures from a report.json dict
"""
