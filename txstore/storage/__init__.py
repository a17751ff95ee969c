"""The storage node (`twistd objectnode`): account, container and object servers on local devices."""
