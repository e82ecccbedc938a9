#!/bin/bash

# Parameters
#SBATCH --account=proj
#SBATCH --array=0-3%4
#SBATCH --cpus-per-task=8
#SBATCH --error=/FOLDER/%A_%a_0_log.err
#SBATCH --gpus-per-node=2
#SBATCH --job-name=qeval
#SBATCH --mem=64G
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=/FOLDER/%A_%a_0_log.out
#SBATCH --partition=gpu
#SBATCH --signal=USR2@90
#SBATCH --time=90
#SBATCH --wckey=submitit

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /FOLDER/%A_%a_%t_log.out --error /FOLDER/%A_%a_%t_log.err PYTHON -u -m submitit.core._submit /FOLDER
