// model/batch.h's run grouping, which the GPU paths use to move a pass's thoughts with
// one copy per run instead of one per sample: every feedback and every flagged row lands
// in exactly one run, in order, and runs are maximal (a run ends only where the next
// source row is not the next row).
#include <gtest/gtest.h>

#include <vector>

#include "model/batch.h"

namespace coconut::model {
namespace {

TEST(BatchRuns, LatentAlignedPassIsOneRun) {
  Pass pass{0, 5, {}};
  const int B = 4;
  for (int s = 0; s < B; ++s) pass.feedback.push_back({s, 4});  // every sample from column 4
  const std::vector<FeedbackRun> runs = feedback_runs(pass, B);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].first_row, 16u);
  EXPECT_EQ(runs[0].count, 4u);
  EXPECT_EQ(runs[0].index, 0u);
}

TEST(BatchRuns, FeedbacksSplitWhereRowsAreNotConsecutive) {
  // B = 4: samples 0, 1 from column 3 (rows 12, 13), sample 3 from column 3 (row 15:
  // sample 2 feeds nothing), samples 0, 1 from column 5 (rows 20, 21), sample 2 from
  // column 5 given before sample 1 (rows 22 then 21: not ascending, a run of its own).
  Pass pass{0, 6, {{0, 3}, {1, 3}, {3, 3}, {0, 5}, {2, 5}, {1, 5}}};
  const std::vector<FeedbackRun> runs = feedback_runs(pass, 4);
  const std::vector<std::vector<size_t>> want = {{12, 2, 0}, {15, 1, 2}, {20, 1, 3}, {22, 1, 4}, {21, 1, 5}};
  ASSERT_EQ(runs.size(), want.size());
  size_t covered = 0;
  for (size_t k = 0; k < runs.size(); ++k) {
    EXPECT_EQ(runs[k].first_row, want[k][0]) << "run " << k;
    EXPECT_EQ(runs[k].count, want[k][1]) << "run " << k;
    EXPECT_EQ(runs[k].index, want[k][2]) << "run " << k;
    EXPECT_EQ(runs[k].index, covered) << "run " << k << " does not start where the previous ended";
    covered += runs[k].count;
  }
  EXPECT_EQ(covered, pass.feedback.size());
  EXPECT_TRUE(feedback_runs(Pass{0, 1, {}}, 4).empty());
}

TEST(BatchRuns, FlaggedRowsGroupIntoMaximalRuns) {
  const std::vector<uint8_t> flags = {1, 1, 0, 0, 1, 0, 1, 1, 1};
  const std::vector<RowRun> runs = flagged_runs(flags);
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs[0].first, 0u);
  EXPECT_EQ(runs[0].count, 2u);
  EXPECT_EQ(runs[1].first, 4u);
  EXPECT_EQ(runs[1].count, 1u);
  EXPECT_EQ(runs[2].first, 6u);
  EXPECT_EQ(runs[2].count, 3u);
  EXPECT_TRUE(flagged_runs({0, 0, 0}).empty());
  EXPECT_TRUE(flagged_runs({}).empty());
}

}  // namespace
}  // namespace coconut::model
