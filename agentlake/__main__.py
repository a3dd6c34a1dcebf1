from agentlake.cli import main

main()
