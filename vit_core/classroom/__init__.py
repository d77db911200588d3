"""Classroom mode: a teacher's view broadcast to the class, questions on the live tensors, answers tallied.

    from vit_core.classroom import open_store, questions
    store = open_store(os.environ.get("REDIS_URL"))   # in-process without a URL
    teacher = store.create()                           # .code for the students, .token for the teacher
    student = store.join(teacher.code, "Ada", session="s1")
    q = questions.make("cls_patch", trace, card)       # the answer is read off the trace
    qid = store.ask(teacher.code, teacher.token, q.to_json())
    store.answer(teacher.code, student, qid, q.check([3, 4]))
    questions.tally(q, store.answers(teacher.code, qid)).share

No streamlit here: the app's glue is the classroom section of ui.py.
"""

from vit_core.classroom import questions
from vit_core.classroom.store import Asked, ClassroomError, ClassState, ClassStore, Teacher, open_store

__all__ = ["Asked", "ClassState", "ClassStore", "ClassroomError", "Teacher", "open_store", "questions"]
