from headrot.cli import run

run()
