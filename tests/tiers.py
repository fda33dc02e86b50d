"""The test tiers: `make test` runs every test; `make test-fast` runs `pytest -m "not slow"`, well under a minute on 2
cores. tests/conftest.py marks the slow tests from the tables below; tests/test_test_tiers.py checks the tables against
the tests."""

from pathlib import Path


TESTS = Path(__file__).resolve().parent
ALL = "*"

# Every test under these folders of tests/ is slow: multi-process runs, every model family, the example scripts as
# scripts, the research jobs
SLOW_FOLDERS = ("distributed", "architectures", "examples", "research")

# The slow tests of the other files: file (relative to tests/) -> test function names (every parametrization of each;
# a method as "Class::name"), or ALL. A test is slow if
# * it starts a process (a subprocess, the console script, `accelerate launch`): tests/test_test_tiers.py finds those
#   in the source and fails on one that is not listed here;
# * or it took more than ~1 s in `pytest tests --durations=0` on 2 busy cores (about 0.5 s on idle ones), or was
#   among the fast tier's slowest and repeats what its faster tests check; except
#   test_gradient_reaches_weights_plain_model, kept as the fast tier's end-to-end DecPOTrainer training.
# A new test is fast until listed here: list it if it starts a process or takes more than that
# (`pytest -m "not slow" tests --durations=20` shows the fast tier's slowest).
SLOW_TESTS: dict[str, str | set[str]] = {
    # every test trains, or runs the docs' code blocks
    "monosemanticity/test_callback.py": ALL,
    "test_docs.py": ALL,
    "test_warnings.py": ALL,
    "mixin/test_hygiene.py": ALL,
    "mixin/test_resume.py": ALL,
    "trainers/test_scaling.py": ALL,
    # start processes
    "test_imports.py": {
        "test_a_name_loads_its_libraries_when_first_used",
        "test_import_and_the_command_help_load_no_heavy_library",
        "test_the_console_script_answers_help",
    },
    # over ~1 s (and, where said, start processes)
    "capture/test_capture.py": {
        "test_bitsandbytes_4bit_layers_resolve_and_capture",
        "test_pooling_matches_unpadded_reference",
    },
    "cli/test_cli.py": {
        "test_compare_chat_prompts_pool_at_their_content_by_default",
        "test_compare_with_labels_and_a_base_model_sae",
        "test_compare_with_peft_adapter_and_weight_proxy",
        "test_installed_console_script",  # a process
        "test_load_options_are_trl_model_config_options",
        "test_measure",
        "test_measure_pooling_and_control_columns",
        "test_top_tokens_planted",
        "test_top_tokens_pooling",
    },
    "cli/test_cli_safety.py": {
        "test_an_earlier_run_is_refused_or_resumed_and_the_cli_says_which",
        "test_measure_writes_only_inside_output_dir",
        "test_remote_code_runs_only_with_trust_remote_code",
        "test_training_writes_only_inside_output_dir",
    },
    "cli/test_evaluate.py": {
        "test_evaluate_base_adapter_and_checkpoint",
        "test_preference_only_without_a_scorer",
        "test_prompts_file_split_and_limits",
    },
    "cli/test_train.py": {
        "test_a_dataset_mixture_from_the_yaml",
        "test_a_dataset_of_one_split_trains_without_the_callback_and_says_so",
        "test_cognitive_reframing_csv_trains",
        "test_dpo_with_lora",
        "test_launch_through_accelerate_with_a_trl_preset",  # a process
        "test_monosemanticity_pooling_option_reaches_the_callback",
        "test_push_to_hub_uploads_the_folder_with_the_card",
        "test_the_command_launches_the_script_end_to_end",  # a process
        "test_yaml_config_and_command_line_override",
    },
    "cli/test_train_trainers.py": {
        "test_a_dataset_in_the_trainers_own_format_is_used_as_it_is",
        "test_a_lora_reward_model_trains_its_score_head_in_full",
        "test_kto_unpairs_each_pair_into_a_desirable_and_an_undesirable_row",
        "test_reward_model_on_preference_pairs",
        "test_sft_trains_on_the_chosen_completions",
    },
    "evaluation/test_evaluate_models.py": {
        "test_folders_and_adapters_give_the_library_numbers_of_each_model",
        "test_one_model_and_a_loaded_base_restored_after_each_adapter",
        "test_proxy_differences_are_paired_bootstraps_over_the_probes",
        "test_results_files",
        "test_the_differences_are_paired_bootstraps_of_the_per_unit_values",
    },
    "evaluation/test_generation.py": {
        "test_batched_greedy_is_one_prompt_at_a_time",
        "test_chat_prompts_go_through_the_template_with_the_generation_prompt",
        "test_sampling_is_reproducible_with_a_seed",
    },
    "evaluation/test_preference.py": {
        "test_batches_are_dpo_trainers_eval_batches",
        "test_logps_are_brute_force_sums",
        "test_rewards_are_dpo_trainers_evaluate_with_a_peft_adapter",
        "test_rewards_are_dpo_trainers_evaluate_with_a_ref_model",
    },
    "evaluation/test_preference_real_tokenizers.py": {
        "test_rewards_are_dpo_trainers_evaluate_with_a_peft_adapter",
        "test_rewards_are_dpo_trainers_evaluate_with_a_ref_model",
        "test_smollm2_tokenizer_is_smollm2s",
    },
    "evaluation/test_scoring.py": {
        "test_classifier_folder_scores_are_the_models_probabilities",
        "test_default_label_is_positive_when_there_is_one",
    },
    "monosemanticity/test_compare.py": {
        "test_folders_and_adapters_measure_as_the_library_measures_each_model",
        "test_llama_models_have_no_weight_proxy_and_say_why",
        "test_prepared_probes_chat_pooling_and_a_loaded_base_with_an_adapter_folder",
        "test_the_table_holds_each_model_and_its_changes_against_the_base",
    },
    "monosemanticity/test_measure.py": {
        "test_chat_prompts_measure_their_templated_tokens",
        "test_matches_prompts_run_one_by_one",
        "test_peft_model_measures_the_adapted_activations",
        "test_processes_measure_disjoint_shards_whose_sums_and_rows_give_the_full_result",
        "test_prompts_longer_than_the_model_keep_their_end",
        "test_rows_control_and_participation_ratio_match_prompts_run_one_by_one",
    },
    "monosemanticity/test_neurons.py": {"test_four_bit_weights_are_dequantised"},
    "independent/test_sae.py": {"test_a_trained_sae_recovers_a_planted_dictionary_and_round_trips_in_saelens_format"},
    "monosemanticity/test_pooling.py": {
        "test_last_content_picks_the_last_content_token_of_chat_probes",
        "test_mean_pooling_equals_the_mean_over_each_prompts_tokens",
        "test_token_id_probes_and_plain_text",
    },
    "monosemanticity/test_loading.py": {
        "test_an_adapter_on_the_base_it_records_or_on_one_given",
    },
    "test_compat.py": {
        "test_16_trl_and_peft_call_the_deprecated_checkpointing_methods",
        "test_2_policy_forward_runs_before_a_separate_reference_forward",
        "test_2_policy_forward_runs_before_the_disabled_adapter_reference_forward",
        "test_2_policy_forward_runs_before_the_ref_adapter_forward_of_a_peft_model",
    },
    "test_test_tiers.py": {"test_pytest_selects_the_fast_tier_as_make_test_fast_does"},  # a process
    "mixin/test_bad_input.py": {"test_the_site_the_modules_to_save_error_suggests_trains"},
    "mixin/test_conformance.py": {"test_decpo_does_what_dpo_does", "test_moe_router_aux_loss"},
    "mixin/test_numerics.py": {
        "test_a_diverging_fp16_run_goes_on_as_it_does_with_dpo",
        "test_non_finite_activations_carry_on_as_dpo_with_a_warning",
        "test_penalty_that_goes_non_finite_first_stops_before_the_step",
        "test_training_step_with_degenerate_activations_stays_finite",
    },
    "mixin/test_trainer.py": {
        "test_checkpoint_recomputation_and_later_forwards_are_not_captured",
        "test_coef_zero_behaves_exactly_like_dpo_trainer",
        "test_every_loss_type_trains_with_the_penalty",
        "test_gradient_accumulation_scales_penalty_like_dpo_loss",
        "test_gradient_reaches_weights_peft_lora_without_ref_model",
        "test_gradient_with_checkpointing_and_peft",
        "test_gradient_with_non_reentrant_checkpointing_equals_without",
        "test_gradient_with_precomputed_reference",
        "test_gradient_with_several_layers_computed_as_one_batch",
        "test_hooks_exist_only_inside_compute_loss_and_never_double",
        "test_hooks_removed_when_the_forward_raises",
        "test_metrics_logged_in_train_and_eval_per_layer",
        "test_model_card_and_push_to_hub",
        "test_one_gather_and_one_host_sync_per_step_for_all_layers",
        "test_peft_reference_forward_is_ignored_and_rows_are_the_policy",
        "test_reentrant_checkpointing_enabled_on_the_model_trains_with_the_penalty",
        "test_gradient_with_reentrant_checkpointing_equals_without",
        "test_gradient_with_reentrant_checkpointing_peft_and_accumulation",
        "test_a_reentrant_layer_that_is_never_recomputed_fails_the_step",
        "test_separate_ref_model_is_never_captured",
    },
    "trainers/test_decorrelated.py": {
        "test_a_training_with_trls_default_checkpointing_prints_no_warning",
        "test_coefficient_zero_is_exactly_the_trl_trainer",
        "test_monosemanticity_callback_measures_each_trainer",
        "test_reentrant_checkpointing_gives_the_gradient_without_checkpointing",
        "test_non_finite_penalty_stops_before_the_step_and_leaves_no_hook",
        "test_penalty_reaches_the_gradient_and_is_logged_and_carded",
    },
    "trainers/test_rows.py": {
        "test_kto_rows_come_from_the_grad_forward_never_the_kl_batch",
        "test_kto_with_peft_captures_the_policy_never_the_adapter_disabled_reference",
        "test_kto_without_the_pause_would_capture_the_kl_forward",
        "test_online_rows_are_the_completions_never_the_generation_forward",
        "test_reward_rows_are_the_chosen_and_rejected_halves",
        "test_reward_sequences_selects_one_half",
        "test_sft_assistant_only_rows_pool_only_the_assistant_tokens",
        "test_sft_mean_pooling_averages_only_the_completion_tokens",
        "test_sft_packed_batch_one_row_per_packed_sequence",
        "test_sft_padded_batch_one_row_per_sequence_at_its_last_real_token",
        "test_sft_padding_free_batch_one_row_per_sequence",
    },
}


def is_slow(file: str, name: str) -> bool:
    """Whether test ``name`` (a function name, or "Class::name") of ``file`` (relative to tests/) is in the slow tier."""
    if file.split("/")[0] in SLOW_FOLDERS:
        return True
    listed = SLOW_TESTS.get(file, ())
    return listed == ALL or name in listed


def tier_key(item) -> tuple[str, str] | None:
    """``(file relative to tests/, test name without parameters)`` of a collected test; None outside tests/."""
    try:
        file = Path(item.path).resolve().relative_to(TESTS).as_posix()
    except ValueError:
        return None
    return file, "::".join(item.nodeid.split("::")[1:]).split("[")[0]
