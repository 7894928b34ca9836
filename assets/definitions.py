"""Everything Dagster loads: ``dagster dev -m pipelines.definitions``."""

from pathlib import Path

import dagster as dg

from assets.augmentation import augmented_images
from assets.common import ScenarioGanResource
from assets.evaluation import evaluation
from assets.ingestion import ingested_images
from assets.ruler import ruler
from assets.training import generator
from assets.validation import validated_images
from pipelines.automation import dvc_restore_sensor, raw_data_sensor, scenario_job, weekly_retrain

PROJECT_ROOT = Path(__file__).resolve().parents[1]

defs = dg.Definitions(
    assets=[ingested_images, validated_images, augmented_images, ruler, generator, evaluation],
    jobs=[scenario_job],
    schedules=[weekly_retrain],
    sensors=[raw_data_sensor, dvc_restore_sensor],
    resources={"project": ScenarioGanResource(base_dir=str(PROJECT_ROOT))},
    executor=dg.in_process_executor,
)
