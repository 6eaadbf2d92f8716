"""A demo campaign and a deterministic stream of supporter messages.

The campaign is modelled on a letter-writing marathon: four fictional cases,
each with an authority, a prison and a family to write to, and supporters from
dozens of countries writing in their own languages and scripts. Every name,
address, e-mail and number here is invented.
"""

from __future__ import annotations

import csv
import random
import tomllib
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from delivery.models import MESSAGE_COLUMNS

__all__ = ["DEMO_CAMPAIGN_TOML", "generate_messages", "write_messages_csv"]

DEMO_CAMPAIGN_TOML: str = (
    resources.files("delivery.data").joinpath("demo_campaign.toml").read_text(encoding="utf-8")
)


_CSV_FIELDS = MESSAGE_COLUMNS
_START = datetime(2026, 11, 20, tzinfo=UTC)
_SPAN_SECONDS = 31 * 24 * 3600  # 2026-11-20 00:00:00 up to 2026-12-20 23:59:59
_HUMAN_RIGHTS_DAY = datetime(2026, 12, 10, tzinfo=UTC)
_CASE_WEIGHTS = {"viktor-arkhipov": 3, "agua-azul-defenders": 2, "leila-farzaneh": 3}
_FAMILY_FIRST = frozenset({"zh", "ja", "ko"})  # family name first, no space
_FLAG_LINK = "More news: https://example.org/x"
_FLAG_PHONE = "Call me: +44 20 7946 0000"


class _Country(NamedTuple):
    code: str
    lang: str
    weight: int
    female: tuple[str, ...]
    male: tuple[str, ...]
    family: tuple[str, ...]  # "masculine/feminine" where the form follows gender
    cities: tuple[str, ...]


def _c(head: str, first_names: str, rest: str) -> _Country:
    """Country from "CODE lang weight", "female | male" and "family names | cities"."""
    code, lang, weight = head.split()
    female, male = first_names.split(" | ")
    family, cities = rest.split(" | ")

    def words(text: str) -> tuple[str, ...]:
        return tuple(w.replace("_", " ") for w in text.split())

    return _Country(
        code,
        lang,
        int(weight),
        words(female),
        words(male),
        words(family),
        tuple(cities.split(", ")),
    )


_COUNTRIES: tuple[_Country, ...] = (
    _c(
        "PL pl 4",
        "Agnieszka Zofia Małgorzata Katarzyna | Łukasz Paweł Michał Tomasz",
        "Nowak Kowalski/Kowalska Wójcik Mazur Zając | Koszalin, Warszawa, Kraków, Gdańsk",
    ),
    _c(
        "DE de 3",
        "Anna Lena Sabine Jule | Jonas Felix Jürgen Tobias",
        "Müller Schneider Fischer Weber Becker | Berlin, Hamburg, Köln, Leipzig, München",
    ),
    _c(
        "FR fr 3",
        "Camille Élodie Chloé Manon | Julien Théo Mathieu Étienne",
        "Martin Bernard Dubois Lefèvre Moreau | Paris, Lyon, Marseille, Nantes, Lille",
    ),
    _c(
        "ES es 2",
        "Lucía Carmen Paula Nuria | Javier Sergio Álvaro Jordi",
        "García Fernández López Martínez Ortega | Madrid, Barcelona, Sevilla, Bilbao",
    ),
    _c(
        "MX es 2",
        "Guadalupe Fernanda Ximena Itzel | Diego Emiliano Rodrigo Héctor",
        "Hernández Ramírez Cruz Morales | Ciudad de México, Guadalajara, Oaxaca, Puebla",
    ),
    _c(
        "AR es 1",
        "Florencia Valentina Sofía Milagros | Matías Santiago Facundo Nicolás",
        "González Gómez Díaz Pereyra Romero | Buenos Aires, Córdoba, Rosario, Mendoza",
    ),
    _c(
        "CL es 1",
        "Catalina Javiera Constanza | Benjamín Vicente Cristóbal",
        "Muñoz Rojas Soto Contreras Silva | Santiago, Valparaíso, Concepción, Temuco",
    ),
    _c(
        "CO es 1",
        "Daniela Valentina Laura | Andrés Camilo Julián",
        "Restrepo Cárdenas Ospina Castaño Mejía | Bogotá, Medellín, Cali, Barranquilla",
    ),
    _c(
        "BR pt 3",
        "Ana Beatriz Juliana Luíza | João Rafael Thiago Gustavo",
        "Silva Santos Oliveira Souza Araújo | Porto Alegre, São Paulo, Recife, Salvador",
    ),
    _c(
        "PT pt 1",
        "Inês Mariana Margarida | Tiago Duarte Gonçalo",
        "Pereira Costa Rodrigues Martins Sousa | Lisboa, Porto, Coimbra, Braga",
    ),
    _c(
        "IT it 2",
        "Giulia Chiara Francesca Martina | Marco Luca Davide Matteo",
        "Rossi Russo Ferrari Esposito Bianchi Greco | Roma, Milano, Napoli, Torino, Bologna",
    ),
    _c(
        "NL nl 2",
        "Sanne Femke Lotte Anouk | Daan Bram Joris Sem",
        "de_Jong Jansen de_Vries van_Dijk Bakker Visser | Amsterdam, Utrecht, Groningen",
    ),
    _c(
        "SE sv 1",
        "Elsa Maja Astrid Ebba | Erik Oskar Lars Nils",
        "Andersson Johansson Lindqvist Berg Nyström | Stockholm, Göteborg, Malmö, Uppsala",
    ),
    _c(
        "GB en 3",
        "Emily Charlotte Hannah Grace | Oliver James Harry George",
        "Smith Taylor Walker Hughes Clarke Evans | London, Manchester, Leeds, Glasgow",
    ),
    _c(
        "US en 3",
        "Jessica Ashley Maria Brianna | Tyler Marcus Andrew Kevin",
        "Johnson Williams Brown Miller Nguyen | Chicago, New York, Oakland, Atlanta, Denver",
    ),
    _c(
        "NG en 2",
        "Chiamaka Ngozi Aisha Funmilayo | Emeka Tunde Ibrahim Chinedu",
        "Okafor Adeyemi Bello Eze Okonkwo Balogun | Lagos, Abuja, Ibadan, Enugu, Kano",
    ),
    _c(
        "GH en 1",
        "Akosua Abena Efua | Kwame Kofi Yaw",
        "Mensah Owusu Asante Boateng Appiah | Accra, Kumasi, Tamale, Cape Coast",
    ),
    _c(
        "ZA en 1",
        "Thandiwe Naledi Lerato | Sipho Thabo Pieter",
        "Dlamini Nkosi Mokoena van_der_Merwe Naidoo | Johannesburg, Cape Town, Durban",
    ),
    _c(
        "KE sw 2",
        "Wanjiru Akinyi Njeri Zawadi | Otieno Kamau Baraka Juma",
        "Mwangi Ochieng Wafula Kiprono Mutua | Nairobi, Mombasa, Kisumu, Nakuru",
    ),
    _c(
        "TG fr 2",
        "Afi Akouvi Essi Yawa | Komlan Kodjo Koffi Sénam",
        "Agbodjan Amegah Kpodar Lawson Adjovi | Lomé, Kara, Sokodé, Kpalimé",
    ),
    _c(
        "SN fr 1",
        "Awa Fatou Aminata Mariama | Moussa Ousmane Cheikh Mamadou",
        "Diop Ndiaye Fall Sow Sarr | Dakar, Saint-Louis, Thiès, Ziguinchor",
    ),
    _c(
        "RU ru 2",
        "Анна Мария Ольга Екатерина | Алексей Дмитрий Игорь Сергей",
        "Смирнов/Смирнова Попов/Попова Соколов/Соколова Седых | Москва, Казань, Пермь, Томск",
    ),
    _c(
        "UA uk 2",
        "Оксана Ірина Наталія Софія | Олександр Андрій Тарас Богдан",
        "Шевченко Коваленко Бондаренко Мельник Ткачук | Київ, Львів, Харків, Одеса, Дніпро",
    ),
    _c(
        "EG ar 1",
        "فاطمة مريم نور سلمى | أحمد محمود يوسف عمر",
        "حسن إبراهيم عبد_الله السيد منصور | القاهرة, الإسكندرية, الجيزة, أسوان, المنصورة",
    ),
    _c(
        "MA ar 2",
        "خديجة زينب سارة هند | ياسين مهدي أيوب حمزة",
        "العلوي بنعلي الإدريسي التازي بناني | الرباط, الدار البيضاء, فاس, مراكش, طنجة",
    ),
    _c(
        "IL he 1",
        "נועה תמר מיכל יעל | יונתן איתי עומר דניאל",
        "כהן לוי מזרחי פרץ ביטון אברהם | תל אביב, ירושלים, חיפה, באר שבע",
    ),
    _c(
        "IR fa 1",
        "مریم سارا نگار پریسا | علی رضا امیر بهرام",
        "احمدی حسینی محمدی رضایی کریمی نوری | تهران, اصفهان, شیراز, تبریز, مشهد",
    ),
    _c(
        "TR tr 2",
        "Elif Zeynep Ayşe Defne | Mehmet Emre Burak Oğuz",
        "Yılmaz Kaya Demir Şahin Çelik Aydın | İstanbul, Ankara, İzmir, Diyarbakır, Eskişehir",
    ),
    _c(
        "GR el 1",
        "Μαρία Ελένη Κατερίνα Δήμητρα | Γιώργος Νίκος Κώστας Γιάννης",
        "Παπαδόπουλος/Παπαδοπούλου Νικολάου Γεωργίου Οικονόμου | Αθήνα, Θεσσαλονίκη, Πάτρα",
    ),
    _c(
        "IN hi 3",
        "प्रिया अनीता सुनीता कविता | राहुल अमित विकास संजय",
        "शर्मा वर्मा गुप्ता सिंह यादव | दिल्ली, मुंबई, जयपुर, लखनऊ, पटना",
    ),
    _c(
        "NP ne 2",
        "सीता गीता सरिता अनुपमा | राम हरि बिकाश सुमन",
        "श्रेष्ठ गुरुङ तामाङ अधिकारी थापा | काठमाडौं, पोखरा, ललितपुर, विराटनगर",
    ),
    _c(
        "BD bn 1",
        "ফাতেমা নুসরাত তানিয়া শারমিন | রাকিব তানভীর আরিফ সাকিব",
        "রহমান হোসেন আহমেদ চৌধুরী ইসলাম | ঢাকা, চট্টগ্রাম, খুলনা, সিলেট, রাজশাহী",
    ),
    _c(
        "TH th 1",
        "สุดา มาลี นภา อรุณี | สมชาย ประเสริฐ วิชัย ธนากร",
        "ศรีสุข ใจดี สมบูรณ์ แสงทอง | กรุงเทพมหานคร, เชียงใหม่, ขอนแก่น, ภูเก็ต",
    ),
    _c(
        "CN zh 2",
        "秀英 丽娜 晓燕 婷婷 | 伟 强 志明 俊杰",
        "王 李 张 刘 陈 杨 | 北京, 上海, 广州, 成都, 武汉",
    ),
    _c(
        "JP ja 2",
        "花子 美咲 陽菜 結衣 | 翔太 大輔 健一 蓮",
        "佐藤 鈴木 高橋 田中 伊藤 | 東京, 大阪, 京都, 札幌, 福岡",
    ),
    _c(
        "KR ko 3",
        "지은 서연 민지 수빈 | 민준 지훈 현우 도윤",
        "김 이 박 최 정 강 | 서울, 부산, 인천, 대구, 광주",
    ),
)

# Country code -> (event name, city, start in UTC, length in hours).
_EVENTS: dict[str, tuple[str, str, datetime, int]] = {
    "PL": ("Koszalin 24h marathon", "Koszalin", datetime(2026, 12, 10, 10, tzinfo=UTC), 24),
    "TG": ("Lomé concert", "Lomé", datetime(2026, 12, 5, 18, tzinfo=UTC), 5),
    "KR": ("Seoul letter night", "서울", datetime(2026, 12, 8, 10, tzinfo=UTC), 4),
    "KE": ("Nairobi campus write-in", "Nairobi", datetime(2026, 12, 3, 7, tzinfo=UTC), 8),
    "BR": ("Porto Alegre street stall", "Porto Alegre", datetime(2026, 11, 28, 13, tzinfo=UTC), 6),
    "NP": ("Kathmandu candle vigil", "काठमाडौं", datetime(2026, 12, 10, 12, tzinfo=UTC), 3),
}


def _texts(block: str) -> dict[str, str]:
    """Parse "key: text" entries; indented lines continue the entry before them."""
    texts: dict[str, str] = {}
    key = ""
    for line in block.splitlines():
        if not line.strip():
            continue
        if line[0].isspace():
            texts[key] += " " + line.strip()
        else:
            key, _, text = line.partition(": ")
            texts[key] = text.strip()
    return texts


# Keys: "open LANG" / "close LANG" frame every pre-written appeal, "appeal CASE LANG" is
# its heart; "note LANG" is a personal note (the sender's first name is added);
# "tweet CASE LANG" and "petition CASE" are shared by everyone who sends them.
_TEXT = _texts("""
open en: Dear Sir or Madam,
close en: Thank you for your attention to this urgent matter.
open es: Distinguida autoridad:
close es: Le agradezco su atención a este asunto urgente.
open fr: Madame, Monsieur,
close fr: Je vous remercie de l'attention que vous porterez à cette demande urgente.
open de: Sehr geehrte Damen und Herren,
close de: Vielen Dank für Ihre Aufmerksamkeit in dieser dringenden Angelegenheit.
open ru: Уважаемые представители власти!
close ru: Благодарю вас за внимание к этому срочному делу.
open ar: حضرات السادة المحترمين،
close ar: أشكركم على اهتمامكم بهذه القضية العاجلة.
appeal viktor-arkhipov en: I urge you to release Viktor Arkhipov immediately and unconditionally.
  He is detained solely for his peaceful work as a journalist. Until his release, he must have
  regular access to his family, his lawyer and medical care.
appeal viktor-arkhipov es: Le pido que ponga en libertad inmediata e incondicional a Viktor
  Arkhipov, detenido únicamente por su trabajo pacífico como periodista. Mientras tanto, debe
  tener acceso regular a su familia, a su abogado y a atención médica.
appeal viktor-arkhipov fr: Je vous demande de libérer immédiatement et sans condition Viktor
  Arkhipov, détenu uniquement pour son travail pacifique de journaliste. D'ici là, il doit pouvoir
  voir régulièrement sa famille et son avocat et recevoir des soins.
appeal viktor-arkhipov de: Ich fordere Sie auf, Viktor Arkhipov sofort und bedingungslos
  freizulassen. Er ist allein wegen seiner friedlichen Arbeit als Journalist inhaftiert. Bis
  dahin muss er regelmäßig seine Familie und seinen Anwalt sehen können.
appeal viktor-arkhipov ru: Я призываю вас немедленно и безоговорочно освободить Виктора
  Архипова, задержанного исключительно за мирную журналистскую работу. До освобождения ему
  должны быть обеспечены встречи с семьёй и адвокатом и медицинская помощь.
appeal viktor-arkhipov ar: أحثكم على الإفراج فورًا ودون قيد أو شرط عن فيكتور أرخيبوف، المحتجز
  فقط بسبب عمله الصحفي السلمي. وإلى حين الإفراج عنه، يجب أن يتمكن بانتظام من لقاء عائلته ومحاميه
  وأن يحصل على الرعاية الطبية.
appeal agua-azul-defenders en: I urge you to drop all charges against the Agua Azul water
  defenders and to release Teodoro Cálix. They are prosecuted only for peacefully protecting the
  river their community depends on.
appeal agua-azul-defenders es: Le pido que retire todos los cargos contra las personas defensoras
  del agua de Agua Azul y que ponga en libertad a Teodoro Cálix. Se les procesa solo por proteger
  pacíficamente el río del que vive su comunidad.
appeal agua-azul-defenders fr: Je vous demande d'abandonner toutes les poursuites contre les
  défenseurs de l'eau d'Agua Azul et de libérer Teodoro Cálix. Ils sont poursuivis uniquement
  pour avoir protégé pacifiquement la rivière dont dépend leur communauté.
appeal agua-azul-defenders de: Ich fordere Sie auf, alle Anklagen gegen die Wasserschützer von
  Agua Azul fallen zu lassen und Teodoro Cálix freizulassen. Sie werden nur verfolgt, weil sie
  friedlich den Fluss schützen, von dem ihre Gemeinde lebt.
appeal agua-azul-defenders ru: Я призываю вас снять все обвинения с защитников воды из общины
  Агуа-Асуль и освободить Теодоро Калиса. Их преследуют только за мирную защиту реки, от которой
  зависит жизнь их общины.
appeal agua-azul-defenders ar: أحثكم على إسقاط جميع التهم الموجهة إلى المدافعين عن المياه في
  أغوا أزول والإفراج عن تيودورو كاليكس. إنهم يُلاحَقون فقط لأنهم يحمون سلميًا النهر الذي يعتمد
  عليه مجتمعهم.
appeal leila-farzaneh en: I urge you to quash the conviction of Leila Farzaneh and release her
  immediately and unconditionally. She is imprisoned solely for peacefully defending women's
  rights. Until then, she must receive medical care and regular family visits.
appeal leila-farzaneh es: Le pido que anule la condena de Leila Farzaneh y la ponga en libertad
  de inmediato y sin condiciones. Está encarcelada solo por defender pacíficamente los derechos
  de las mujeres.
appeal leila-farzaneh fr: Je vous demande d'annuler la condamnation de Leila Farzaneh et de la
  libérer immédiatement et sans condition. Elle est emprisonnée uniquement pour avoir défendu
  pacifiquement les droits des femmes.
appeal leila-farzaneh de: Ich fordere Sie auf, das Urteil gegen Leila Farzaneh aufzuheben und
  sie sofort und bedingungslos freizulassen. Sie ist nur inhaftiert, weil sie sich friedlich für
  die Rechte von Frauen eingesetzt hat.
appeal leila-farzaneh ru: Я призываю вас отменить приговор Лейле Фарзане и немедленно освободить
  её. Она находится в заключении исключительно за мирную защиту прав женщин.
appeal leila-farzaneh ar: أحثكم على إلغاء الحكم الصادر بحق ليلى فرزانه والإفراج عنها فورًا
  ودون قيد أو شرط، فهي مسجونة فقط بسبب دفاعها السلمي عن حقوق المرأة.
appeal karim-el-mahdy en: I urge you to release Karim El-Mahdy immediately and unconditionally.
  He has spent more than two years in pre-trial detention solely for his peaceful work as a
  human rights lawyer.
appeal karim-el-mahdy es: Le pido que ponga en libertad inmediata e incondicional a Karim
  El-Mahdy, que lleva más de dos años en prisión preventiva solo por su trabajo pacífico como
  abogado de derechos humanos.
appeal karim-el-mahdy fr: Je vous demande de libérer immédiatement et sans condition Karim
  El-Mahdy, en détention provisoire depuis plus de deux ans uniquement en raison de son travail
  pacifique d'avocat des droits humains.
appeal karim-el-mahdy de: Ich fordere Sie auf, Karim El-Mahdy sofort und bedingungslos
  freizulassen. Er ist seit über zwei Jahren in Untersuchungshaft, allein wegen seiner
  friedlichen Arbeit als Menschenrechtsanwalt.
appeal karim-el-mahdy ru: Я призываю вас немедленно и безоговорочно освободить Карима
  эль-Махди. Он более двух лет находится в предварительном заключении исключительно за мирную
  работу правозащитного адвоката.
appeal karim-el-mahdy ar: أحثكم على الإفراج فورًا ودون قيد أو شرط عن كريم المهدي، المحتجز
  احتياطيًا منذ أكثر من عامين فقط بسبب عمله السلمي كمحامٍ في مجال حقوق الإنسان.
note en: Dear friend, you are not alone. People all over the world are thinking of you and
  standing with you. Stay strong!
note es: Desde muy lejos te enviamos fuerza, cariño y esperanza. ¡No te olvidamos!
note fr: Nous pensons à vous chaque jour. Partout dans le monde, des gens sont à vos côtés.
  Courage et espoir.
note de: Wir denken an Sie und stehen an Ihrer Seite. Sie sind nicht allein. Viel Kraft!
note pt: Pensamos em você todos os dias. Muita gente no mundo inteiro está do seu lado. Força!
note pl: Myślimy o Tobie każdego dnia. Wiele osób na całym świecie jest z Tobą. Dużo siły!
note it: Ti pensiamo ogni giorno. Tante persone nel mondo sono con te. Forza e coraggio!
note nl: We denken aan je en staan aan je zijde. Heel veel sterkte en warme groeten!
note sv: Vi tänker på dig varje dag. Du är inte ensam. Många varma hälsningar!
note sw: Tunakufikiria kila siku. Hauko peke yako; watu duniani kote wako pamoja nawe.
  Jipe moyo!
note ru: Мы думаем о вас каждый день. Вы не одни: люди по всему миру поддерживают вас.
  Держитесь!
note uk: Ми думаємо про вас щодня. Ви не самі: люди в усьому світі з вами. Тримайтеся!
note ar: نفكر فيك كل يوم، ونحن معك من كل أنحاء العالم. مع خالص المحبة والتضامن.
note fa: هر روز به یاد تو هستیم. تنها نیستی؛ مردم سراسر جهان در کنار تو هستند. با مهر و امید.
note he: אנחנו איתך. אנשים בכל העולם חושבים עליך ושולחים לך כוח ותקווה.
note tr: Her gün seni düşünüyoruz. Yalnız değilsin, dünyanın dört bir yanından insanlar
  seninle. Güçlü kal!
note el: Σε σκεφτόμαστε κάθε μέρα. Άνθρωποι σε όλο τον κόσμο είναι δίπλα σου. Κουράγιο!
note hi: हम हर दिन आपके बारे में सोचते हैं। आप अकेले नहीं हैं, पूरी दुनिया के लोग आपके साथ हैं।
  हिम्मत रखिए!
note ne: हामी हरेक दिन तपाईंलाई सम्झन्छौं। संसारभरिका मानिसहरू तपाईंसँग छन्। साहस राख्नुहोस्!
note bn: আমরা প্রতিদিন আপনার কথা ভাবি। আপনি একা নন, সারা বিশ্বের মানুষ আপনার পাশে আছে।
  সাহস রাখুন!
note th: เราคิดถึงคุณทุกวัน คุณไม่ได้อยู่คนเดียว ผู้คนทั่วโลกอยู่เคียงข้างคุณ เป็นกำลังใจให้นะ
note zh: 我们每天都在想着你。你并不孤单，世界各地的人都和你站在一起。请保重！
note ja: 毎日あなたのことを思っています。あなたは一人ではありません。
note ko: 우리는 매일 당신을 생각합니다. 당신은 혼자가 아닙니다. 힘내세요!
tweet viktor-arkhipov en: Journalism is not a crime. Free Viktor Arkhipov now! #W4R26 #FreeViktor
tweet viktor-arkhipov ru: Журналистика не преступление. Свободу Виктору Архипову! #W4R26
tweet viktor-arkhipov de: Journalismus ist kein Verbrechen. Freiheit für Viktor Arkhipov! #W4R26
tweet agua-azul-defenders en: Defending water is not a crime. Drop the charges against the
  Agua Azul defenders! #W4R26 #AguaAzul
tweet agua-azul-defenders es: ¡Defender el agua no es delito! Libertad para Teodoro Cálix. #W4R26
tweet agua-azul-defenders pt: Defender a água não é crime! Liberdade para Teodoro Cálix. #W4R26
tweet leila-farzaneh en: Defending women's rights is not a crime. Free Leila Farzaneh! #W4R26
tweet leila-farzaneh fa: لیلا فرزانه را آزاد کنید! دفاع از حقوق زنان جرم نیست. #W4R26
tweet leila-farzaneh fr: Défendre les droits des femmes n'est pas un crime. #W4R26
tweet karim-el-mahdy en: Lawyers must never be jailed for doing their job. Free Karim El-Mahdy!
  #W4R26
tweet karim-el-mahdy ar: الحرية للمحامي كريم المهدي! الدفاع عن حقوق الإنسان ليس جريمة. #W4R26
tweet karim-el-mahdy es: ¡Libertad para Karim El-Mahdy! Defender derechos no es delito. #W4R26
petition viktor-arkhipov: We call on the Prosecutor General to release journalist Viktor
  Arkhipov immediately and unconditionally.
petition agua-azul-defenders: We call on the Public Prosecutor to drop all charges against the
  Agua Azul water defenders and release Teodoro Cálix.
petition leila-farzaneh: We call on the Head of the Judiciary to quash Leila Farzaneh's
  conviction and release her immediately.
petition karim-el-mahdy: We call on the Public Prosecutor to release human rights lawyer Karim
  El-Mahdy immediately and unconditionally.
""")
_TRANSLIT = {"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "ß": "ss", "ı": "i", "æ": "ae", "đ": "d"}

_Parts = tuple[str, str, str, str]  # to, language, kind, body


@dataclass(frozen=True)
class _CaseInfo:
    slug: str
    recipients: dict[str, tuple[str, ...]]  # kind -> recipient slugs
    danger_words: tuple[str, ...]


@dataclass(frozen=True)
class _Supporter:
    name: str
    first: str
    email: str
    city: str
    country: str
    lang: str


@cache
def _cases() -> tuple[_CaseInfo, ...]:
    cases: list[_CaseInfo] = []
    for case in tomllib.loads(DEMO_CAMPAIGN_TOML)["case"]:
        by_kind: dict[str, list[str]] = {}
        for recipient in case["recipient"]:
            by_kind.setdefault(str(recipient["kind"]), []).append(str(recipient["slug"]))
        cases.append(
            _CaseInfo(
                slug=str(case["slug"]),
                recipients={kind: tuple(slugs) for kind, slugs in by_kind.items()},
                danger_words=tuple(str(w) for w in case.get("danger_words", ())),
            )
        )
    return tuple(cases)


def _ascii_word(text: str) -> str:
    """Lower-case ASCII spelling of a Latin-script name; "" for any other script."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(ch) or ch in " -'":
            continue
        low = _TRANSLIT.get(ch, ch).lower()
        if not (low.isascii() and low.isalpha()):
            return ""
        out.append(low)
    return "".join(out)


def _email(rng: random.Random, first: str, last: str) -> str:
    a, b = _ascii_word(first), _ascii_word(last)
    local = f"{a}.{b}" if a and b else f"user{rng.randint(100, 99999)}"
    if rng.random() < 0.3:
        local += str(rng.randint(1, 99))
    return f"{local}@example.{rng.choice(('org', 'net', 'com'))}"


def _supporter(rng: random.Random, country: _Country, city: str) -> _Supporter:
    female = rng.random() < 0.5
    first = rng.choice(country.female if female else country.male)
    forms = rng.choice(country.family).split("/")
    last = forms[-1] if female else forms[0]
    name = f"{last}{first}" if country.lang in _FAMILY_FIRST else f"{first} {last}"
    email = "" if rng.random() < 0.4 else _email(rng, first, last)
    return _Supporter(name, first, email, city, country.code, country.lang)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _who_and_when(rng: random.Random, country: _Country) -> tuple[_Supporter, str, str]:
    """A supporter, when they wrote, and the event they wrote at ("" for none)."""
    event = _EVENTS.get(country.code)
    if event is not None and rng.random() < 0.5:
        name, city, start, hours = event
        moment = start + timedelta(seconds=rng.randrange(hours * 3600))
        return _supporter(rng, country, city), _iso(moment), name
    city = rng.choice(country.cities)
    if rng.random() < 0.15:  # Human Rights Day brings a spike
        moment = _HUMAN_RIGHTS_DAY + timedelta(seconds=rng.randrange(24 * 3600))
    else:
        moment = _START + timedelta(seconds=rng.randrange(_SPAN_SECONDS))
    return _supporter(rng, country, city), _iso(moment), ""


def _to(rng: random.Random, case: _CaseInfo, kind: str) -> str:
    """Mostly the recipient kind; now and then the slug of that recipient."""
    slugs = case.recipients.get(kind, ())
    if slugs and rng.random() < 0.1:
        return rng.choice(slugs)
    return kind


def _appeal(rng: random.Random, case: _CaseInfo, who: _Supporter) -> _Parts:
    lang = who.lang if f"open {who.lang}" in _TEXT else "en"
    body = " ".join(
        (_TEXT[f"open {lang}"], _TEXT[f"appeal {case.slug} {lang}"], _TEXT[f"close {lang}"])
    )
    kind = "email" if who.email and rng.random() < 0.5 else "letter"
    return _to(rng, case, "authority"), lang, kind, body


def _note(rng: random.Random, case: _CaseInfo, who: _Supporter) -> _Parts:
    target = "prison" if "prison" in case.recipients and rng.random() < 0.6 else "family"
    lang = who.lang if f"note {who.lang}" in _TEXT else "en"
    text = _TEXT[f"note {lang}"]
    if rng.random() < 0.02:  # a few notes that screening has to catch
        triggers = [_FLAG_LINK, _FLAG_PHONE]
        if target == "prison" and case.danger_words:
            triggers.append(f"P.S. {rng.choice(case.danger_words)}")
        text = f"{text} {rng.choice(triggers)}"
    return _to(rng, case, target), lang, "letter", f"{text} — {who.first}"


def _tweet(rng: random.Random, case: _CaseInfo, who: _Supporter) -> _Parts:
    prefix = f"tweet {case.slug} "
    langs = [key.removeprefix(prefix) for key in _TEXT if key.startswith(prefix)]
    lang = who.lang if who.lang in langs else rng.choice(langs)
    return _to(rng, case, "authority"), lang, "tweet", _TEXT[prefix + lang]


def _compose(rng: random.Random, case: _CaseInfo, who: _Supporter) -> _Parts:
    """The default mix: signatures, petitions, appeals, personal notes and tweets."""
    roll = rng.random()
    if roll < 0.35:
        return _to(rng, case, "authority"), who.lang, "signature", ""
    if roll < 0.50:
        return _to(rng, case, "authority"), "en", "petition", _TEXT[f"petition {case.slug}"]
    if roll < 0.75:
        return _appeal(rng, case, who)
    if roll < 0.95:
        return _note(rng, case, who)
    return _tweet(rng, case, who)


def _row(rng: random.Random, number: int) -> dict[str, str]:
    country = rng.choices(_COUNTRIES, weights=[c.weight for c in _COUNTRIES])[0]
    who, submitted_at, event = _who_and_when(rng, country)
    cases = _cases()
    case = rng.choices(cases, weights=[_CASE_WEIGHTS.get(c.slug, 2) for c in cases])[0]
    to, language, kind, body = _compose(rng, case, who)
    values = (
        f"demo-{number:06d}",
        case.slug,
        to,
        who.name,
        who.email,
        who.city,
        who.country,
        language,
        kind,
        body,
        submitted_at,
        event,
    )
    return {k: unicodedata.normalize("NFC", v) for k, v in zip(_CSV_FIELDS, values, strict=True)}


def generate_messages(count: int, *, seed: int = 2026) -> Iterator[dict[str, str]]:
    """Yield ``count`` demo messages, one at a time; the same seed gives the same messages."""
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    return _stream(count, random.Random(seed))


def _stream(count: int, rng: random.Random) -> Iterator[dict[str, str]]:
    for number in range(1, count + 1):
        yield _row(rng, number)


def write_messages_csv(path: Path, count: int, *, seed: int = 2026) -> int:
    """Stream ``count`` demo messages into a UTF-8 CSV file; return the rows written."""
    rows = generate_messages(count, seed=seed)
    written = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=_CSV_FIELDS, quoting=csv.QUOTE_MINIMAL)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            written += 1
    return written
