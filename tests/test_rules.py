import json
import re
from pathlib import Path

import pytest

from triage.errors import RulesError
from triage.normalize import normalize_text
from triage.rules import RuleSet, load_rules, max_urgency

CORPUS = Path(__file__).resolve().parent.parent / "datasets" / "corpus"


@pytest.fixture(scope="module")
def rules():
    return load_rules()


def hit_ids(rules, text):
    return {h.rule_id for h in rules.match(normalize_text(text), text)}


@pytest.mark.parametrize("text, rule_id", [
    ("厨房一股很重的煤气味，阀门关了还有！！", "urgency.gas_leak"),
    ("客户来电反映3栋2单元电梯困人，里面有老人", "urgency.people_trapped"),
    ("小区没有任何通知就停电了", "urgency.power_outage"),
    ("家里停水一整天了，小孩没法洗澡", "urgency.water_outage"),
    ("邻居家着火了我打了119", "urgency.fire_smoke"),
    ("楼道电线裸露在外，还冒火花", "urgency.electric_hazard"),
    ("暖气一点都不热，屋里才12度", "urgency.heating_outage"),
    ("宽带断了两天，完全上不了网", "urgency.service_down"),
    ("電梯困人，裡面有老人", "urgency.people_trapped"),
    ("我不想活了，你们看着办", "flag.self_harm_threat"),
    ("再不退款就去12315投诉", "flag.regulator"),
    ("我要发抖音曝光你们", "flag.media"),
    ("我已经请了律师准备起诉", "flag.legal"),
    ("刚才已经报警了，派出所说要调查", "flag.police"),
    ("这是我第三次打电话了还没人管", "flag.repeat_complaint"),
    ("要求双倍赔偿我的损失", "flag.compensation_demand"),
    ("孩子在大堂摔伤了腿，流了很多血", "flag.injury"),
    ("商场关门了，我和同事被锁在里面出不去", "urgency.people_trapped"),
    ("有人自称客服，正让我开会议软件共享屏幕退款", "urgency.ongoing_violation"),
    ("余额正一笔笔往外扣，我什么都没操作", "urgency.ongoing_violation"),
    ("门口一个男的拿着铁棍砸车，还嚷着要动手", "urgency.ongoing_violation"),
    ("你们收款码从上午开始全部失败，顾客都付不了款", "urgency.service_down"),
    ("支付app从中午到现在一直闪退打不开", "urgency.service_down"),
    ("天花板大量漏水，水顺着墙往充值机里流", "urgency.flooding"),
    ("停电前冰箱还好好的，现在停电三个小时了", "urgency.power_outage"),
    ("我每天都在想是不是从楼顶跳下去你们才会重视", "urgency.self_harm"),  # 是不是 asks, does not deny
    ("我现在一分钱都没有 逼我去死是吧", "urgency.self_harm"),              # a space ends the denied clause
    ("多次提及想结束生命", "flag.self_harm_threat"),
    ("6号楼自昨晚起暖气片全部冰凉", "urgency.heating_outage"),              # past start, still ongoing
    ("暖气还是冰的，屋里10度", "urgency.heating_outage"),
    ("对方让我爸共享屏幕，现在还开着视频", "urgency.ongoing_violation"),
    ("每隔一分钟扣一次50，已经扣了八次", "urgency.ongoing_violation"),
    ("门口井盖被压塌了，一个大窟窿", "urgency.structural_falling"),
    ("配电箱门一直开着，小孩老去扒着看", "urgency.electric_hazard"),
    ("个app又死咗，成朝都登入唔到", "urgency.service_down"),
    ("房间有线网络和wifi均无法使用", "urgency.service_down"),
    ("打开快递有股化学味，眼睛好痛", "urgency.toxic_fumes"),
    ("两部电梯从今早开始全都停了，高层上不去", "urgency.elevator_stopped"),
    ("屋里没有电了，冰箱都停了", "urgency.power_outage"),
    ("孩子吃了你们的外卖，上吐下泻住了院", "flag.injury"),
    ("妈要是没钱治病我也跳下去", "urgency.self_harm"),                   # 没钱 negates nothing here
    ("说好6点升级完，现在10点了手机银行仍然提示系统升级中", "urgency.service_down"),
    ("电饭煲一开就着火，吓死人了", "urgency.fire_smoke"),                  # an appliance, not a stove lighting
])
def test_rule_fires_on_real_hazards_and_threats(rules, text, rule_id):
    assert rule_id in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id", [
    ("没有闻到煤气味，就是燃气表不亮", "urgency.gas_leak"),        # denied
    ("不是漏电，是灯泡坏了", "urgency.electric_hazard"),             # denied
    ("昨晚停电，今早已经来电了", "urgency.power_outage"),            # resolved
    ("停水两天，现在已经恢复了，但是没人通知", "urgency.water_outage"),  # resolved
    ("如果再停电我就投诉", "urgency.power_outage"),                  # hypothetical
    ("万一着火了怎么办", "urgency.fire_smoke"),                       # hypothetical
    ("看到账单气炸了", "urgency.fire_smoke"),                         # figurative
    ("我在法院工作，需要开证明", "flag.legal"),                       # workplace
    ("地址在律师事务所楼下", "flag.legal"),
    ("我不会去找媒体的，只想解决问题", "flag.media"),                 # denied threat
    ("不需要赔偿，只要修好", "flag.compensation_demand"),
    ("邻居家着火了我打了119", "flag.police"),                         # 119 is not police
    ("电梯广告太吵了", "urgency.elevator_stopped"),
    ("手机没电了，充电桩在哪", "urgency.power_outage"),
    ("车钥匙锁在里面了，能帮忙叫个开锁的吗", "urgency.people_trapped"),
    ("水管我打算要自己动手修", "urgency.ongoing_violation"),
    ("建议以后停电前提前通知一下业主", "urgency.power_outage"),            # suggestion about future cuts
    ("希望停水停电的公告也能发到业主群", "urgency.water_outage"),
    ("下次停气能不能早点说", "urgency.gas_outage"),
    ("供暖温度不达标，室温仅14度", "urgency.heating_outage"),              # under-heated, not out
    ("空调坏了，室内温度超过三十五度", "urgency.heating_outage"),
    ("雨水井盖缺失，已用木板临时覆盖，请补装", "urgency.structural_falling"),
    ("网路并非完全不能用，但是速度很慢", "urgency.service_down"),
    ("退订了的业务还在扣钱", "urgency.ongoing_violation"),                 # a billing error, not theft
    ("网点在老楼二层，没有电梯，老人只能慢慢爬", "urgency.power_outage"),  # 没有电梯 is not 没有电
    ("通了管道天然气，一拧就着火，方便多了", "urgency.fire_smoke"),        # a stove lighting
    ("灶上蓝火苗只有一小圈，烧水很慢", "urgency.fire_smoke"),              # weak flame, not a fire
    ("有次楼上水管爆了，工程师半小时就关了总阀", "urgency.flooding"),      # a past event told in praise
    ("插座下午冒过一阵烟，已经拉了空开", "urgency.fire_smoke"),            # 冒过: it smoked, and stopped
    ("我爸在外地住院，来不了营业厅办手续", "flag.injury"),                  # in hospital, not hurt by anyone
])
def test_rule_stays_silent_on_denied_resolved_hypothetical_and_lookalikes(rules, text, rule_id):
    assert rule_id not in hit_ids(rules, text)


def test_evidence_offsets_index_the_original_text(rules):
    text = "客戶反映：瓦斯味很重，請儘快處理"
    hits = rules.match(normalize_text(text), text)
    gas = [h for h in hits if h.rule_id == "urgency.gas_leak"]
    assert gas
    ev = gas[0].evidence
    assert text[ev.start:ev.end] == ev.text == "瓦斯味"


def _corpus_texts():
    texts = []
    for split in ("train", "dev", "test"):
        with open(CORPUS / f"{split}.jsonl", encoding="utf-8") as fh:
            texts += [normalize_text(json.loads(line)["text"]) for line in fh]
    return texts


def test_triggers_never_skip_a_pattern_that_would_match(rules):
    texts = _corpus_texts()
    for rule in rules.rules:
        for part in rule.parts:
            if part.trigger_chars is None:
                continue
            for text in texts:
                if part.pattern.search(text):
                    assert not part.trigger_chars.isdisjoint(set(text.lower())), (rule.id, part.pattern.pattern)


def test_triggered_search_finds_what_a_full_scan_finds(rules):
    """Running only the patterns whose triggers occur equals running the rule's whole alternation on the text."""
    whole = {rule.id: re.compile("|".join(f"(?:{part.pattern.pattern})" for part in rule.parts), re.IGNORECASE)
             for rule in rules.rules}
    for text in _corpus_texts() + ["第十二次投诉了，整栋楼停电停水，电梯困人", "多次反映无人处理，网络中断断网"]:
        fast = {rule.id: spans for rule, spans in rules._candidates(text)}
        full = {}
        for rule in rules.rules:
            spans = [m.span() for m in whole[rule.id].finditer(text) if m.end() > m.start()]
            if spans:
                full[rule.id] = spans
        assert fast == full, text


def test_max_urgency_only_raises():
    assert max_urgency("normal", "same_day") == "same_day"
    assert max_urgency("within_24h", None) == "within_24h"
    assert max_urgency() == "normal"


@pytest.mark.parametrize("spec", [
    {"clause_delimiters": "，", "rules": [{"id": "x", "kind": "weird", "patterns": ["a"]}]},
    {"clause_delimiters": "，", "rules": [{"id": "x", "kind": "urgency", "patterns": ["a"]}]},
    {"clause_delimiters": "，", "rules": [{"id": "x", "kind": "flag", "flag": "f", "patterns": ["("]}]},
    {"clause_delimiters": "，", "rules": [{"id": "x", "kind": "flag", "flag": "f", "patterns": ["a"]},
                                          {"id": "x", "kind": "flag", "flag": "f", "patterns": ["b"]}]},
    {"rules": []},
])
def test_invalid_rule_files_are_refused(spec):
    with pytest.raises(RulesError):
        RuleSet(spec)


def test_unreadable_rule_file_is_refused(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text("{", "utf-8")
    with pytest.raises(RulesError):
        load_rules(path)


@pytest.mark.parametrize("text, state", [
    ("停电了，快来修", "on"),
    ("小区没有停电，只是电压不稳", "neg"),
    ("昨天停电了，现在已经修好了", "past"),
    ("如果停电了怎么办", "hyp"),
])
def test_analyze_says_what_became_of_each_urgency_match(rules, text, state):
    hits, states = rules.analyze(normalize_text(text), text)
    assert {"urgency.power_outage:" + state, "same_day:" + state} <= states
    assert (state == "on") == ("urgency.power_outage" in {h.rule_id for h in hits})
    assert hits == rules.match(normalize_text(text), text)


def test_an_empty_rule_set_matches_nothing():
    spec = json.loads((Path(__file__).parent.parent / "triage" / "resources" / "rules.json").read_text("utf-8"))
    empty = RuleSet({**spec, "rules": []})
    assert empty.analyze("停电了，电梯困人") == ([], frozenset())


def test_cue_negators_are_data():
    """没有电了 holds the resolution cue 有电了 but says the opposite; which characters
    negate a cue is part of the rules file."""
    spec = json.loads((Path(__file__).parent.parent / "triage" / "resources" / "rules.json").read_text("utf-8"))
    text = "家里停电了，到现在还是没有电了"
    default = RuleSet(spec).match(normalize_text(text), text)
    without = RuleSet({**spec, "cue_negators": ""}).match(normalize_text(text), text)
    assert len(without) < len(default)


@pytest.mark.parametrize("text, rule_id", [
    ("客户来电后表示停水一整天", "urgency.water_outage"),
    ("停电了，客户来电后情绪激动", "urgency.power_outage"),
    ("客户又来电了，说家里还是停电", "urgency.power_outage"),
])
def test_a_customer_call_is_not_power_coming_back(rules, text, rule_id):
    assert rule_id in hit_ids(rules, text)


def test_power_coming_back_still_resolves_an_outage(rules):
    assert "urgency.power_outage" not in hit_ids(rules, "昨晚停电，今早来电了")


@pytest.mark.parametrize("text, rule_id", [
    ("停水三天了，要求尽快恢复供水", "urgency.water_outage"),
    ("家里停电了，什么时候恢复正常？", "urgency.power_outage"),
    ("电梯困人，人已经救出来了吗？", "urgency.people_trapped"),
    ("停电三小时，物业说马上恢复供电，到现在也没来", "urgency.power_outage"),
    ("燃气泄漏，师傅说已处理好，可还是有味道", "urgency.gas_leak"),
])
def test_a_resolution_asked_for_promised_or_contradicted_resolves_nothing(rules, text, rule_id):
    assert rule_id in hit_ids(rules, text)


@pytest.mark.parametrize("text", ["停水一天，昨天晚上恢复供水了", "昨晚停电大概半小时，现在已经恢复了，想问问是什么原因",
                                  "等了三天终于来电了"])
def test_a_reported_resolution_still_resolves(rules, text):
    assert not any(h.level == "same_day" for h in rules.match(normalize_text(text), text))


@pytest.mark.parametrize("text, rule_id", [
    ("上周六晚上，我在自助银行存钱，隔壁垃圾桶突然窜起火苗，后来消防车都来了", "urgency.fire_smoke"),
    ("前天下午在营业厅排队，充电区突然冒烟，店员只顾收手机", "urgency.fire_smoke"),
])
def test_a_past_cue_earlier_in_the_sentence_makes_a_hazard_past(rules, text, rule_id):
    assert rule_id not in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id", [
    ("暖气从昨天半夜开始，一点热乎气都没有，屋里就11度，停暖了", "urgency.heating_outage"),
    ("上周说来修，结果现在还是停电，冰箱都化了", "urgency.power_outage"),
    ("昨晚小区停了电，到现在冰箱里的东西都化了，还是没有电", "urgency.power_outage"),
])
def test_a_sentence_that_says_it_goes_on_keeps_the_hazard_current(rules, text, rule_id):
    assert rule_id in hit_ids(rules, text)


def test_past_scope_is_the_clause_without_sentence_delimiters(rules):
    spec = json.loads((Path(__file__).parent.parent / "triage" / "resources" / "rules.json").read_text("utf-8"))
    text = "上周六晚上，我在网点等号，隔壁突然窜起火苗"
    clause_only = RuleSet({**spec, "sentence_delimiters": ""}).match(normalize_text(text), text)
    assert "urgency.fire_smoke" in {h.rule_id for h in clause_only}
    assert "urgency.fire_smoke" not in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id", [
    ("站务员已经断电拉了隔离带，麻烦尽快来修", "urgency.power_outage"),        # made safe on purpose
    ("厨房那一路断电了，其他房间用电正常，请来查线路", "urgency.power_outage"),  # one circuit, not an outage
    ("最后自己打车花了120元", "urgency.injury"),                              # money, not an ambulance
    ("电梯口有一摊呕吐物两天没人清理", "urgency.injury"),
    ("取件码无效，件锁在里面拿不出来", "urgency.people_trapped"),              # a parcel, not a person
    ("师傅拿电笔测过，外壳没带电", "urgency.electric_hazard"),
    ("冷气机一直滴水，唔系漏电", "urgency.electric_hazard"),                   # Cantonese denial
    ("鞋子穿两天就开胶，激到我爆炸", "urgency.fire_smoke"),                    # figurative
    ("等了九天还没到，我急得嗓子都冒烟了", "urgency.fire_smoke"),
    ("晚上水压小，燃气热水器打不着火", "urgency.gas_outage"),                  # an appliance, not the supply
    ("安检员说不配合安检就停气", "urgency.gas_outage"),                        # a threat, not a cut
    ("房子空置半年，已申请停水，却收到欠费通知", "urgency.water_outage"),
    ("插头冒了火花，我当即拔掉插头，没有再冒烟", "urgency.electric_hazard"),    # made safe
])
def test_made_safe_lookalike_and_figurative_hits_stay_silent(rules, text, rule_id):
    assert rule_id not in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id", [
    ("客户给其送货的快递员连人带货被困在电梯内", "urgency.people_trapped"),
    ("电源线破损处冒出火花，地面全是水", "urgency.electric_hazard"),
    ("充电枪线身破裂，看得到里面露出铜线", "urgency.electric_hazard"),
    ("升级说六点结束，现在下午三点了，宽带、固话还是全部不通", "urgency.service_down"),
    ("我拔掉了插头，插座还在冒火花", "urgency.electric_hazard"),          # made safe? no: still sparking
])
def test_people_trapped_live_wires_and_dead_lines_still_fire(rules, text, rule_id):
    assert rule_id in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id", [
    ("厨房好像有点臭鸡蛋味，我们不敢开火", "urgency.gas_leak"),
    ("支行侧墙外那根燃气管的接口处一直有嘶嘶声", "urgency.gas_leak"),
    ("充值机侧面那块铁皮，手一贴上去就发麻", "urgency.electric_hazard"),
    ("书桌下方的插座一直散出焦糊味", "urgency.electric_hazard"),
    ("电池包底下在冒白烟，快来", "urgency.fire_smoke"),
    ("电梯卡在两层中间，我妈在里面", "urgency.people_trapped"),
    ("家里水龙头拧开一点水都没有", "urgency.water_outage"),
    ("整栋楼黑漆漆的，电梯也不动", "urgency.power_outage"),
])
def test_hazards_told_by_their_symptoms_fire(rules, text, rule_id):
    assert rule_id in hit_ids(rules, text)


def test_a_hissing_water_pipe_is_not_gas(rules):
    assert "urgency.gas_leak" not in hit_ids(rules, "卫生间的水管有嘶嘶声，不是燃气管，是自来水管")


@pytest.mark.parametrize("text, rule_id", [
    ("收到短信，说下周二早8点到晚8点快充站停电改造，能不能挪到夜里", "urgency.power_outage"),   # announced, not yet
    ("请问周六小区停电检修是几点到几点？", "urgency.power_outage"),
    ("公告说本周六全小区因更换主管道停水，那天正好摆寿宴", "urgency.water_outage"),
    ("停电原因至今没个说法，希望给居民一个解释", "urgency.power_outage"),
    ("希望在电梯厅张贴停电时的疏散示意图", "urgency.power_outage"),
    ("电梯运行中偶尔顿一下但未停运", "urgency.elevator_stopped"),
    ("闻到燃气异味，店方已关闭燃气总阀并开窗通风，目前已无异味", "urgency.gas_leak"),   # made safe
    ("来电询问上月小区垃圾房起火一事，当晚已扑灭", "urgency.fire_smoke"),
])
def test_announced_cuts_explanations_and_made_safe_hazards_stay_silent(rules, text, rule_id):
    assert rule_id not in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id", [
    ("公告说检修停电到17:00，现已超出4个多小时仍未来电", "urgency.power_outage"),     # a planned cut that overran
    ("计划停水检修，通知晚8点恢复，至次日早上7点仍然没水", "urgency.water_outage"),
    ("公告15时恢复供气，至今晚19时仍未通气", "urgency.gas_outage"),
    ("手机银行从早上八点至今完全无法使用", "urgency.service_down"),
])
def test_planned_cuts_that_overran_still_fire(rules, text, rule_id):
    assert rule_id in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id, evidence", [
    ("厨 房 一 股 很 重 的 煤 气 味 ， 快 来 人", "urgency.gas_leak", "煤 气 味"),
    ("小区 停水 两天 了 ， 物业 不管", "urgency.water_outage", "停水"),
])
def test_spaced_out_text_is_matched_with_evidence_in_the_text_as_given(rules, text, rule_id, evidence):
    hits = [h for h in rules.match(normalize_text(text), text) if h.rule_id == rule_id]
    assert hits and hits[0].evidence.text == evidence
    assert text[hits[0].evidence.start:hits[0].evidence.end] == evidence


@pytest.mark.parametrize("text, rule_id", [
    ("投诉了两次，服务态度一点都没有改善", "urgency.water_outage"),          # 一点都没有 without 水
    ("发动机抖动，读出故障码说是三缸失火", "urgency.fire_smoke"),            # an engine misfire
    ("有人打电话叫我把存款转到安全账户，我没理他，直接挂了", "urgency.ongoing_violation"),  # a scam refused
    ("合约到期后还在扣费，已扣款两个月，若本周仍未退款就投诉", "urgency.ongoing_violation"),  # a billing dispute
    ("前天暖气停了一整天，昨晚才热乎，要求退这一天的费用", "urgency.heating_outage"),  # heating came back
])
def test_generic_phrases_misfires_and_refused_scams_stay_silent(rules, text, rule_id):
    assert rule_id not in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id", [
    ("楼上楼下一点水都没有，水龙头拧开干的", "urgency.water_outage"),
    ("刚才已经转出两万到所谓安全账户，对方仍在催我继续转", "urgency.ongoing_violation"),
    ("卡在我手上，扣款短信一条接一条，现在还在扣", "urgency.ongoing_violation"),
])
def test_outages_and_drains_in_progress_still_fire(rules, text, rule_id):
    assert rule_id in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id", [
    ("暖气温乎乎的不够热，室内才17度", "urgency.heating_outage"),            # under standard, not off
    ("出租屋电暖器冒烟了，我已经把插头拔掉了，麻烦换一台", "urgency.fire_smoke"),  # made safe
    ("近一周天天跳闸停电三四次，冰箱受不了", "urgency.power_outage"),  # intermittent
])
def test_weak_heating_unplugged_heaters_and_intermittent_cuts_stay_silent(rules, text, rule_id):
    assert rule_id not in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id", [
    ("暖气片冰凉，屋里才12度，老人冻得发抖", "urgency.heating_outage"),
    ("整个单元停电了，到现在还没来电", "urgency.power_outage"),
])
def test_cold_homes_and_current_cuts_still_fire(rules, text, rule_id):
    assert rule_id in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id", [
    ("快递员把箱子往地上一扔，纸箱都摔破了", "urgency.injury"),                 # a box, not a person
    ("快递员把箱子往地上一扔，纸箱都摔破了", "flag.injury"),
    ("保险柜打不开，护照和现金都锁在里面", "urgency.people_trapped"),           # belongings, not people
    ("配电房有焦糊味，值班电工已拉下总闸，现场无烟无火", "urgency.electric_hazard"),  # made safe
    ("电费早就交了却收到通知，说月底前未缴就要停电，请取消停电", "urgency.power_outage"),  # a cut threatened, not happening
])
def test_broken_parcels_locked_belongings_pulled_mains_and_cut_notices_stay_silent(rules, text, rule_id):
    assert rule_id not in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id", [
    ("老人下楼梯摔破了头，正在流血", "urgency.injury"),
    ("孩子被锁在车里出不来了", "urgency.people_trapped"),
])
def test_injuries_and_people_locked_in_still_fire(rules, text, rule_id):
    assert rule_id in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id", [
    ("琴日停水成日，而家返咗，但係冇通知", "urgency.water_outage"),           # Cantonese: it is back now
    ("路由器冒烟了，我拔掉插头后已经没有烟了，请换一台", "urgency.fire_smoke"),   # made safe
    ("电表箱有焦味，电工已断开开关，现无冒烟", "urgency.electric_hazard"),
    ("这几天燃气灶火苗明显偏小，烧水很慢", "urgency.fire_smoke"),                 # weak flame, not a fire
])
def test_cantonese_resolutions_smoke_gone_and_weak_flames_stay_silent(rules, text, rule_id):
    assert rule_id not in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id", [
    ("車子充電中途斷電，已經進廠修了三次", "urgency.power_outage"),           # a charging fault, not a supply cut
    ("我家阳台没暖气片也要交暖气费，不合理", "urgency.heating_outage"),
    ("骗子让我开屏幕共享，还好没转钱，已经挂了", "urgency.ongoing_violation"),
    ("通知说礼拜四上午八点到下午六点检修停电，是整个小区都停吗", "urgency.power_outage"),  # announced
])
def test_charging_faults_radiator_fees_refused_scams_and_weekday_notices_stay_silent(rules, text, rule_id):
    assert rule_id not in hit_ids(rules, text)


@pytest.mark.parametrize("text", [
    "无锡12345工单：市民反映小区井盖冒污水",                  # 无锡 is a city, not a negator
    "消費者委員會轉介個案：投訴人要求退款",
    "国家金融监督管理总局某监管分局转办：投诉人反映信用卡被自动分期",
    "沈阳市政务服务热线交办单：市民反映噪音扰民",
    "臺中市政府消費者保護官函轉申訴案",
])
def test_regulator_transfers_raise_the_regulator_flag(rules, text):
    assert "flag.regulator" in hit_ids(rules, text)


def test_a_longer_lookalike_is_not_hidden_by_a_shorter_one_at_the_same_place():
    """Look-alikes are searched one by one: in a single alternation 充电 would match first
    and hide 充电中途断电, and the outage would fire."""
    spec = json.loads((Path(__file__).parent.parent / "triage" / "resources" / "rules.json").read_text("utf-8"))
    rule = {"id": "urgency.cut", "kind": "urgency", "level": "same_day", "patterns": ["断电"],
            "exclude": ["充电", "充电中途断电"]}
    rules = RuleSet({**spec, "rules": [rule]})
    assert rules.match("充电中途断电") == []
    assert [h.rule_id for h in rules.match("家里断电了")] == ["urgency.cut"]


@pytest.mark.parametrize("text, rule_id", [
    ("燃气表隔三差五自动关阀断气，插卡又能用", "urgency.gas_outage"),            # intermittent
    ("收到欠费停电通知，可是电费已经交了，家里有制氧机真的不能停电", "urgency.power_outage"),
    ("车停在地库被人划伤了，要求调监控", "flag.injury"),                      # the car, not a person
    ("制氧机开机即报警，显示流量异常", "flag.police"),                        # a device alarm
    ("闻到燃气味，师傅已关闭表前阀，开窗通风后复测无浓度", "urgency.gas_leak"),  # made safe
    ("充电枪插头发烫有焦糊味，已经拔下充电枪", "urgency.electric_hazard"),
])
def test_intermittent_cuts_pleas_scratched_cars_device_alarms_and_closed_valves_stay_silent(rules, text, rule_id):
    assert rule_id not in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id", [
    ("自动门突然夹住老人的手臂，夹出一大片淤青", "flag.injury"),
    ("外墙瓷砖掉下来砸到他肩膀，人在医院拍片", "flag.injury"),
    ("半小时内不放人就报警", "flag.police"),
    ("再不退钱我就PO上PTT让大家看看", "flag.media"),
])
def test_bruises_falling_tiles_police_threats_and_forum_posts_raise_flags(rules, text, rule_id):
    assert rule_id in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id", [
    ("烟雾报警器一直响，楼道里一股烟", "urgency.fire_smoke"),
    ("服务员把热汤泼到孩子手上，烫起一片水泡", "flag.injury"),
    ("鱼里有石子，咬下去门牙崩了一块", "flag.injury"),
    ("手表丢在房间里，本周内无结果将报警", "flag.police"),     # 无结果 does not negate 报警
])
def test_ringing_smoke_alarms_scalds_broken_teeth_and_conditional_police_reports_fire(rules, text, rule_id):
    assert rule_id in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id", [
    ("房间的烟雾报警器一直没响过，是不是坏了", "urgency.fire_smoke"),   # the alarm did not ring
    ("仪表盘水温报警，已经靠边停车", "flag.police"),                # a dashboard warning
    ("房间电视无信号，麻烦来调一下", "urgency.service_down"),        # a TV, not the phone line
])
def test_silent_alarms_dashboard_warnings_and_tv_signal_do_not_fire(rules, text, rule_id):
    assert rule_id not in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id", [
    ("管网所回复：非停气，疑似调压器问题，如需更换可能短时停气，届时提前通知", "urgency.gas_outage"),
    ("客服：您所在区域在此次停水范围内，计划时间为明日9:00至17:00", "urgency.water_outage"),
    ("昨晚停电约一小时，复电的瞬间冰箱就烧坏了，请协助申请赔偿", "urgency.power_outage"),   # it came back
    ("施工走后吊顶里掉落的碎屑没人清理", "urgency.structural_falling"),
    ("救援单 报案 13:41 车主称车辆在高速上爆胎，已停在应急车道", "flag.police"),             # a dispatch field
])
def test_denied_and_possible_cuts_restored_power_debris_and_dispatch_fields_stay_silent(rules, text, rule_id):
    assert rule_id not in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id", [
    ("公告停电到16:00，至18:30仍未复电，预计21:00前复电", "urgency.power_outage"),   # a promise is not power back
    ("尾门夹住孩子手指，拍片有一根骨裂", "flag.injury"),
    ("孩子被鱼刺卡住喉咙，去医院做喉镜才取出来", "flag.injury"),
    ("三十日内未获合理回复，将转交金管局跟进", "flag.regulator"),
])
def test_overrun_cuts_fractures_choking_and_financial_regulators_fire(rules, text, rule_id):
    assert rule_id in hit_ids(rules, text)


@pytest.mark.parametrize("text", [
    "闸机门合上夹到孩子胳膊，青了一大块",
    "门口码的箱子垮下来砸到老人的脚背，肿起好大一坨",
    "台阶结冰我妈摔倒了，已经送县医院",
])
def test_bruises_swelling_and_county_hospitals_raise_injury(rules, text):
    assert "flag.injury" in hit_ids(rules, text)


@pytest.mark.parametrize("text, rule_id", [
    ("燃气安检的人说不换软管就给停气", "urgency.gas_outage"),              # a threat to cut
    ("物业在业主群发广告，停水停电的重要通知都被刷没了", "urgency.water_outage"),
    ("前台要我自己去派出所做临时住宿登记", "flag.police"),                 # a procedure
    ("柜台说必须本人到场，要么去法院办监护", "flag.legal"),
])
def test_cut_threats_notices_and_procedures_stay_silent(rules, text, rule_id):
    assert rule_id not in hit_ids(rules, text)


def test_hospital_evidence_starts_at_the_hospital_clause_not_a_doubled_zai(rules):
    text = "孩子摔倒了现在在医院缝针"
    spans = [h.evidence.text for h in rules.match(normalize_text(text), text) if h.rule_id == "flag.injury"]
    assert "在医院缝针" in spans and "在在医院缝针" not in spans


@pytest.mark.parametrize("text,rule_id", [
    ("琴晚停咗六個鐘電，終於有返電，但係職員態度好差", "urgency.power_outage"),
    ("前兩日App數碼鎖匙用唔到，今日終於得返，要求補償車費", "urgency.service_down"),
    ("琴日分行部ATM冒煙，而家部機都修好咗", "urgency.fire_smoke"),
    ("上午支行停电关门，下午恢复营业了，但门口没贴告示", "urgency.power_outage"),
    ("暖气停了三天，直到周日晚上才恢复，要求减免采暖费", "urgency.heating_outage"),
    ("洗澡时闻到瓦斯味，我们关了总开关开窗，请派人检查管线", "urgency.gas_leak"),
    ("排风扇刚才冒烟，我把开关关了，现在不冒了，明天来换", "urgency.fire_smoke"),
    ("排烟罩起火，店员已用灭火器扑灭，无人受伤，请派人查烟道", "urgency.fire_smoke"),
    ("车库里闻到汽油味，把车推到外面通风，现在味道基本散了", "urgency.gas_leak"),
    ("办业务时大厅烟感报警器响起，全员疏散，后确认为误报", "urgency.fire_smoke"),
    ("楼道有股焦糊味，以为电线起火了，虚惊一场，是楼下烧纸", "urgency.fire_smoke"),
    ("我还以为哪里着火了，问了前台才知道是保洁在熨地毯", "urgency.fire_smoke"),
    ("分线箱一直嗡嗡响，怕是漏电，请电工来看看", "urgency.electric_hazard"),
    ("两周前电梯困人之后，物业一直没回复维保记录", "urgency.people_trapped"),
    ("师傅半小时就找到被老鼠咬断的网线，服务一流", "urgency.injury"),
    ("停水那几天你们送水上楼，特此写信致谢", "urgency.water_outage"),
    ("师傅说是一段老线路烧断了，五点二十就来电了，谢谢", "urgency.injury"),
    ("保险丝烧断了，麻烦换一个", "flag.injury"),
    ("周末有没有网点开门？老人卡在哪里办", "urgency.service_down"),
])
def test_power_back_in_cantonese_false_alarms_mistaken_fears_and_thank_you_letters_stay_silent(rules, text, rule_id):
    assert rule_id not in hit_ids(rules, text)


@pytest.mark.parametrize("text,rule_id", [
    ("燃气表旁边有股臭味，不确定是不是漏气，不敢开火", "urgency.gas_leak"),
    ("地铁站电梯停运，门口拉了警戒线，老人还在站台等", "urgency.elevator_stopped"),
    ("物业切断了电源，全楼停电到现在", "urgency.power_outage"),
    ("我被狗咬断了手指，在医院", "urgency.injury"),
    ("他的手指被机器压断了，在医院", "urgency.injury"),
    ("闸机门把孩子的手压伤了", "flag.injury"),
    ("家里没有网了，孩子上网课都上不了", "urgency.service_down"),
])
def test_an_unsure_gas_smell_a_cordoned_stopped_lift_and_a_cut_by_the_company_still_fire(rules, text, rule_id):
    assert rule_id in hit_ids(rules, text)


@pytest.mark.parametrize("text,rule_id", [
    ("寫信多謝李師傅，上星期我跌低撞傷個頭流咗好多血，佢即刻幫我叫白車，希望公司表揚佢", "flag.injury"),
    ("上个月我父亲在站里被闸机绊倒，额头磕破出血，感谢站务员帮忙止血", "urgency.injury"),
    ("上周在店里摔伤了腿，已经出院，要求赔偿医药费", "urgency.injury"),
])
def test_a_past_injury_still_raises_urgency_even_in_a_thank_you_letter(rules, text, rule_id):
    hits = [h for h in rules.match(normalize_text(text), text) if h.rule_id == rule_id]
    assert hits and all(h.level == "same_day" for h in hits)


def test_an_injury_that_did_not_happen_stays_silent(rules):
    text = "幸好没有人受伤，感谢保安及时疏散"
    assert "urgency.injury" not in hit_ids(rules, text)


def test_literal_cue_lists_are_written_as_normalised_text():
    """Cues are matched on normalised text (simplified, half-width); a cue in traditional
    characters (有電喇) could never match."""
    spec = json.loads((Path(__file__).resolve().parents[1] / "triage/resources/rules.json").read_text("utf-8"))
    for key, value in spec.items():
        if key.endswith(("_cues", "negators", "exceptions", "_before", "_after")) and isinstance(value, list):
            assert [c for c in value if normalize_text(c) != c] == [], key


@pytest.mark.parametrize("text,rule_id", [
    ("琴晚停電三個鐘，而家有電喇，但管理處成晚冇人聽電話", "urgency.power_outage"),
    ("早上手机银行完全无法登录，现在好像好了，但转账扣了两次", "urgency.service_down"),
    ("宽带故障已于今日修复，但断网四天，要求减免月费", "urgency.service_down"),
    ("灯一天会短暂断电好几次，每次几秒钟就恢复，请检查线路", "urgency.power_outage"),
    ("通知说周四要停电检修，停电还没开始，但老人离不开制氧机", "urgency.power_outage"),
])
def test_power_back_repairs_done_today_blinks_and_cuts_not_yet_started_stay_silent(rules, text, rule_id):
    assert rule_id not in hit_ids(rules, text)


@pytest.mark.parametrize("text,rule_id", [
    ("卧室插座刚冒烟，回路开关已经关掉，现在没味道了，明天来换", "urgency.fire_smoke"),
    ("廚房頭先有陣煤氣味，已經閂咗總掣開晒窗，而家冇味喇", "urgency.gas_leak"),
    ("户外机柜今早冒过一阵烟，物业拉闸了，目前不冒烟", "urgency.fire_smoke"),
    ("楼道有焦糊味，保安查看后确认非电线起火，是有人烧纸", "urgency.fire_smoke"),
    ("充电桩指示灯闪红灯，已确认无焦味，亦非漏电", "urgency.electric_hazard"),
])
def test_smells_gone_switches_off_and_fires_that_were_not_stay_silent(rules, text, rule_id):
    assert rule_id not in hit_ids(rules, text)


def test_a_cantonese_but_still_smells_keeps_the_gas_leak_current(rules):
    text = "成個廚房好大陣煤氣味，我已經閂咗總掣開晒窗，但仲係有味，唔該即刻派人嚟"
    assert "urgency.gas_leak" in hit_ids(rules, text)


@pytest.mark.parametrize("text,rule_id", [
    ("问题类型：停水咨询 描述：看到通知下周二管网维修停水，想问几点到几点", "urgency.water_outage"),
    ("早班交接：卫生间6个感应水龙头有2个不出水，已报工程部", "urgency.water_outage"),
    ("我厂专线本周频繁中断，夜班断网时出库单打不出来", "urgency.service_down"),
    ("昨日补胎，今晨该胎漏气无法行驶，已派拖车", "urgency.gas_leak"),
    ("中午高峰燃气压力低，炉灶火苗只有一点点", "urgency.fire_smoke"),
    ("APP续费扣款成功但系统仍显示未缴，又缴了一次", "urgency.ongoing_violation"),
    ("充值机屏幕后方冒火花，已断开电源，火花已停止，无人受伤", "urgency.fire_smoke"),
])
def test_outage_enquiries_partial_taps_flat_tyres_weak_flames_and_stale_payment_status_stay_silent(rules, text, rule_id):
    assert rule_id not in hit_ids(rules, text)


@pytest.mark.parametrize("text,rule_id", [
    ("厨房燃气管的球阀漏气，嘶嘶响，味道很大", "urgency.gas_leak"),
    ("卡里的钱被转出三笔，现在还在不断扣款", "urgency.ongoing_violation"),
    ("小区断网时间太长了，从昨晚到现在都没网", "urgency.service_down"),
])
def test_a_leaking_gas_valve_a_drain_in_progress_and_a_long_outage_still_fire(rules, text, rule_id):
    assert rule_id in hit_ids(rules, text)


@pytest.mark.parametrize("text,rule_id", [
    ("回复维护通知：维护期间座机还能不能打120？", "urgency.injury"),
    ("空开还是跳，每天晚上一开电磁炉就断电，问题没解决", "urgency.power_outage"),
    ("★★★★☆ 停電通報後很快就有回覆，還會推播預計復電時間", "urgency.power_outage"),
])
def test_questions_about_calling_120_habitual_trips_and_outage_reports_stay_silent(rules, text, rule_id):
    assert rule_id not in hit_ids(rules, text)


def test_a_card_being_drained_now_fires(rules):
    text = "点了短信链接填了卡号，现在银行卡一直在扣钱，已经扣了三千多了"
    assert "urgency.ongoing_violation" in hit_ids(rules, text)


@pytest.mark.parametrize("text,rule_id", [
    ("頭先成棟樓火警鐘響，消防員到咗查過，管理處話係誤鳴", "urgency.fire_smoke"),
    ("充电宝拆封时冒烟，消防人员到场查看后确认已无危险", "urgency.fire_smoke"),
    ("刚才说快递柜冒烟那个是我看错了，是烧烤摊的烟", "urgency.fire_smoke"),
    ("网点说包裹里有电池，我拆开给他们看，根本没有电池", "urgency.power_outage"),
    ("售后说我的车有漏电风险，必须换电池包", "urgency.electric_hazard"),
    ("這次社區停水，管委會提前一週就公告，還準備了飲用水，很貼心", "urgency.water_outage"),
])
def test_false_alarms_mistakes_missing_batteries_claimed_risks_and_kind_notices_stay_silent(rules, text, rule_id):
    assert rule_id not in hit_ids(rules, text)
