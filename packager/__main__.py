from packager.cli import run

run()
