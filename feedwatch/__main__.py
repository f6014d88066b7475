from feedwatch.cli import main

main(prog_name="feedwatch")
